package bridge

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caarlos0/env/v11"
)

func minimalEnv() map[string]string {
	return map[string]string{
		"MATRIX_HOMESERVER": "https://matrix.example.org",
		"MATRIX_USER_ID":    "@bot:example.org",
		"MATRIX_PASSWORD":   "secret",
	}
}

func environ(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := LoadConfig(environ(minimalEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MQTT.BaseTopic != "matrix2mqtt" || cfg.MQTT.URL != "tcp://127.0.0.1:1883" || cfg.DataDir != "./data" || cfg.MaxPayloadBytes != 65536 {
		t.Fatalf("defaults: %+v", cfg)
	}
}

func TestLoadConfigErrorsNameTheSetting(t *testing.T) {
	tests := []struct {
		name    string
		set     map[string]string
		unset   string
		setting string
	}{
		{"no homeserver", nil, "MATRIX_HOMESERVER", "MATRIX_HOMESERVER"},
		{"bad homeserver", map[string]string{"MATRIX_HOMESERVER": "matrix.example.org"}, "", "MATRIX_HOMESERVER"},
		{"bad user", map[string]string{"MATRIX_USER_ID": "bot"}, "", "MATRIX_USER_ID"},
		{"no secret", nil, "MATRIX_PASSWORD", "MATRIX_PASSWORD or MATRIX_ACCESS_TOKEN"},
		{"bad mqtt url", map[string]string{"MQTT_URL": "udp://x"}, "", "MQTT_URL"},
		{"bad base topic", map[string]string{"MQTT_BASE_TOPIC": "a/+"}, "", "MQTT_BASE_TOPIC"},
		{"bad targets", map[string]string{"TARGETS": "kitchen"}, "", "TARGETS"},
		{"bad target id", map[string]string{"TARGETS": "kitchen=abc"}, "", "TARGETS"},
		{"bad friendly name", map[string]string{"TARGETS": "a/b=!x:hs"}, "", "TARGETS"},
		{"duplicate friendly name", map[string]string{"TARGETS": "a=!x:hs,a=!y:hs"}, "", "TARGETS"},
		{"bad allowlist", map[string]string{"ALLOWED_TARGETS": "nope"}, "", "ALLOWED_TARGETS"},
		{"bad auto join", map[string]string{"AUTO_JOIN": "alice"}, "", "AUTO_JOIN"},
		{"bad discovery prefix", map[string]string{"HA_DISCOVERY_PREFIX": "ha/#"}, "", "HA_DISCOVERY_PREFIX"},
		{"bad status topic", map[string]string{"HA_STATUS_TOPIC": "/status"}, "", "HA_STATUS_TOPIC"},
		{"bad discovery switch", map[string]string{"HA_DISCOVERY": "maybe"}, "", "HA_DISCOVERY"},
		{"bad command sender", map[string]string{"COMMAND_SENDERS": "alice"}, "", "COMMAND_SENDERS"},
		{"bad command room", map[string]string{"COMMAND_ROOMS": "garage"}, "", "COMMAND_ROOMS"},
		{"bad command name", map[string]string{"COMMANDS": "Lights"}, "", "COMMANDS"},
		{"bad command react", map[string]string{"COMMAND_REACT": "sometimes"}, "", "COMMAND_REACT"},
		{"bad duration", map[string]string{"OUTBOX_MAX_AGE": "soon"}, "", "OUTBOX_MAX_AGE"},
		{"bad number", map[string]string{"MAX_PAYLOAD_BYTES": "lots"}, "", "MAX_PAYLOAD_BYTES"},
		{"small payload", map[string]string{"MAX_PAYLOAD_BYTES": "10"}, "", "MAX_PAYLOAD_BYTES"},
		{"log level", map[string]string{"LOG_LEVEL": "loud"}, "", "LOG_LEVEL"},
		{"unknown database", map[string]string{"DATABASE_URL": "mysql://x"}, "", "DATABASE_URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := minimalEnv()
			delete(m, tc.unset)
			for k, v := range tc.set {
				m[k] = v
			}
			_, err := LoadConfig(environ(m))
			if err == nil || !strings.Contains(err.Error(), tc.setting) {
				t.Fatalf("LoadConfig() = %v, want an error naming %s", err, tc.setting)
			}
		})
	}
}

func TestLoadConfigFromFiles(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "password")
	if err := os.WriteFile(secret, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := minimalEnv()
	delete(m, "MATRIX_PASSWORD")
	m["MATRIX_PASSWORD_FILE"] = secret
	m["TARGETS"] = "kitchen=!abc:example.org, alice=@alice:example.org,general=#general:example.org"
	cfg, err := LoadConfig(environ(m))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Matrix.Password != "from-file" {
		t.Fatalf("password = %q", cfg.Matrix.Password)
	}
	if len(cfg.Targets.Names) != 3 || cfg.Targets.Names["alice"] != "@alice:example.org" {
		t.Fatalf("targets = %v", cfg.Targets.Names)
	}
	m["MATRIX_PASSWORD"] = "both"
	if _, err := LoadConfig(environ(m)); err == nil || !strings.Contains(err.Error(), "MATRIX_PASSWORD_FILE") {
		t.Fatalf("both set: %v", err)
	}
	delete(m, "MATRIX_PASSWORD")
	m["MATRIX_PASSWORD_FILE"] = filepath.Join(dir, "missing")
	if _, err := LoadConfig(environ(m)); err == nil || !strings.Contains(err.Error(), "MATRIX_PASSWORD_FILE") {
		t.Fatalf("missing file: %v", err)
	}
}

// TestExampleEnvDocumentsEverySetting keeps configs/example.env complete.
func TestExampleEnvDocumentsEverySetting(t *testing.T) {
	data, err := os.ReadFile("../configs/example.env")
	if err != nil {
		t.Fatal(err)
	}
	params, err := env.GetFieldParams(&Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(params) < 20 {
		t.Fatalf("only %d settings found; is the config nested?", len(params))
	}
	for _, p := range params {
		if !regexp.MustCompile(`(?m)^(# )?` + p.Key + `=`).Match(data) {
			t.Errorf("configs/example.env does not document %s", p.Key)
		}
	}
	// The example must also be a valid configuration.
	vars, err := ReadEnvFile("../configs/example.env")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(vars); err != nil {
		t.Fatalf("configs/example.env is not valid: %v", err)
	}
}

func TestReadEnvFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "env")
	content := "# comment\n\nA=1\nexport B = \"two words\"\nC='x=y'\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"A=1", "B=two words", "C=x=y"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q, want %q", got, want)
	}
	if err := os.WriteFile(path, []byte("oops\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadEnvFile(path); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("bad line: %v", err)
	}
}

// TestConfigErrorsHideCredentials: a DATABASE_URL or MQTT_URL that is refused is not repeated
// in the error with the password it holds.
func TestConfigErrorsHideCredentials(t *testing.T) {
	tests := []struct{ name, setting, value string }{
		{"database", "DATABASE_URL", "mysql://admin:hunter2@db/m2m"},
		{"malformed database URL", "DATABASE_URL", "postgres://admin:hunter2%zz@db/m2m"},
		{"broker without host", "MQTT_URL", "tcp://admin:hunter2@"},
		{"broker scheme", "MQTT_URL", "http://admin:hunter2@broker:1883"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := minimalEnv()
			m[tc.setting] = tc.value
			_, err := LoadConfig(environ(m))
			if err == nil || !strings.Contains(err.Error(), tc.setting) {
				t.Fatalf("LoadConfig() = %v, want an error naming %s", err, tc.setting)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the error repeats the password: %v", err)
			}
		})
	}
}
