package bridge

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMaskSetting(t *testing.T) {
	tests := []struct {
		name, key, value, want string
	}{
		{"password", "MATRIX_PASSWORD", "hunter2", masked},
		{"access token", "MATRIX_ACCESS_TOKEN", "syt_abc", masked},
		{"MQTT password", "MQTT_PASSWORD", "pw", masked},
		{"HTTP token", "HTTP_TOKEN", "t0k3n", masked},
		{"recovery key", "E2EE_RECOVERY_KEY", "EsTc abcd", masked},
		{"pickle key", "E2EE_PICKLE_KEY", "pickle", masked},
		{"empty secret stays empty", "MATRIX_PASSWORD", "", ""},
		{"MQTT URL with credentials", "MQTT_URL", "tcp://user:pass@broker:1883", "tcp://user:" + masked + "@broker:1883"},
		{"MQTT URL without credentials", "MQTT_URL", "ssl://broker:8883", "ssl://broker:8883"},
		{"MQTT URL with user only", "MQTT_URL", "tcp://user@broker:1883", "tcp://user@broker:1883"},
		{"database URL", "DATABASE_URL", "postgres://m2m:s3cret@db/m2m?sslmode=disable", "postgres://m2m:" + masked + "@db/m2m?sslmode=disable"},
		{"database URL with password parameter", "DATABASE_URL", "postgres://db/m2m?password=s3cret&sslmode=disable", "postgres://db/m2m?password=" + masked + "&sslmode=disable"},
		{"URL that does not parse", "DATABASE_URL", "postgres://u:p@[::1", masked},
		{"homeserver with credentials", "MATRIX_HOMESERVER", "https://u:p@matrix.example.org", "https://u:" + masked + "@matrix.example.org"},
		{"media headers", "MEDIA_HEADERS", "ha.lan:8123=Authorization: Bearer eyJ0,cam.lan=X-Api-Key: k3y",
			"ha.lan:8123=Authorization: " + masked + ",cam.lan=X-Api-Key: " + masked},
		{"media headers of another shape", "MEDIA_HEADERS", "Bearer eyJ0", masked},
		{"plain setting", "MQTT_BASE_TOPIC", "home/matrix", "home/matrix"},
		{"client key", "MQTT_KEY", "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----", masked},
		{"client certificate is not a secret", "MQTT_CERT", "-----BEGIN CERTIFICATE-----", "-----BEGIN CERTIFICATE-----"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MaskSetting(tt.key, tt.value); got != tt.want {
				t.Errorf("MaskSetting(%s, %q) = %q, want %q", tt.key, tt.value, got, tt.want)
			}
		})
	}
}

func TestPrintConfigMasksEverySecret(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("file-token-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{
		"MATRIX_PASSWORD":     "matrix-pass-value",
		"MATRIX_ACCESS_TOKEN": "syt_token_value",
		"MQTT_PASSWORD":       "mqtt-pass-value",
		"MQTT_URL":            "tcp://mqttuser:url-pass-value@127.0.0.1:1883",
		"DATABASE_URL":        "postgres://m2m:db-pass-value@127.0.0.1/m2m",
		"E2EE_RECOVERY_KEY":   "recovery-key-value",
		"E2EE_PICKLE_KEY":     "pickle-key-value",
		"MEDIA_HEADERS":       "ha.lan:8123=Authorization: Bearer header-token-value",
	}
	vars := minimalEnv()
	for k, v := range secrets {
		vars[k] = v
	}
	vars["HTTP_TOKEN_FILE"] = tokenFile
	var out strings.Builder
	if err := PrintConfig(&out, environ(vars)); err != nil {
		t.Fatal(err)
	}
	printed := out.String()
	for _, secret := range []string{"matrix-pass-value", "syt_token_value", "mqtt-pass-value", "url-pass-value", "db-pass-value", "recovery-key-value", "pickle-key-value", "file-token-value", "header-token-value"} {
		if strings.Contains(printed, secret) {
			t.Errorf("the printed configuration shows %q:\n%s", secret, printed)
		}
	}
	for _, line := range []string{
		"MQTT_URL=tcp://mqttuser:" + masked + "@127.0.0.1:1883\n",
		"HTTP_TOKEN=" + masked + "  # from HTTP_TOKEN_FILE\n",
		"MEDIA_HEADERS=ha.lan:8123=Authorization: " + masked + "\n",
		"MQTT_BASE_TOPIC=matrix2mqtt  # default\n",
		"MATRIX_USER_ID=@bot:example.org\n",
	} {
		if !strings.Contains(printed, line) {
			t.Errorf("the printed configuration lacks %q:\n%s", line, printed)
		}
	}
}

func TestPrintConfigRefusesAnInvalidOne(t *testing.T) {
	vars := minimalEnv()
	vars["LOG_LEVEL"] = "loud"
	var out strings.Builder
	if err := PrintConfig(&out, environ(vars)); err == nil || !strings.Contains(err.Error(), "LOG_LEVEL") {
		t.Fatalf("got %v, want an error naming LOG_LEVEL", err)
	}
	if out.Len() != 0 {
		t.Errorf("printed %q for an invalid configuration", out.String())
	}
}

// FuzzMaskURL checks that a URL's password never survives the masking.
func FuzzMaskURL(f *testing.F) {
	for _, seed := range []string{"tcp://u:p@h:1883", "postgres://u:p@h/db?password=x", "ssl://h", "%zz", "postgres://u:p@[::1", "ws://a:b@c/d?token=e#f"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got := MaskURL(raw)
		u, err := url.Parse(raw)
		if err != nil {
			if got != masked {
				t.Fatalf("MaskURL(%q) = %q for a URL that does not parse", raw, got)
			}
			return
		}
		pass, has := u.User.Password()
		if !has || pass == "" || strings.Contains(masked, pass) {
			return
		}
		m, err := url.Parse(got)
		if err != nil {
			t.Fatalf("MaskURL(%q) = %q, which does not parse: %v", raw, got, err)
		}
		if p, _ := m.User.Password(); p != masked {
			t.Fatalf("MaskURL(%q) = %q keeps password %q", raw, got, p)
		}
	})
}
