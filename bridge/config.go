package bridge

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/discovery"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// Config is the whole bridge configuration; each part owns its section.
type Config struct {
	Matrix    matrix.Config
	MQTT      mqtt.Config
	Discovery discovery.Config
	Commands  CommandConfig

	DataDir     string `env:"DATA_DIR" envDefault:"./data"`
	DatabaseURL string `env:"DATABASE_URL"`
	// Targets are friendly names for rooms and users: kitchen=!abc:hs,alice=@alice:hs.
	Targets Targets `env:"TARGETS"`
	// AllowedTargets, when set, limits which targets requests may reach.
	AllowedTargets  []string      `env:"ALLOWED_TARGETS"`
	MaxPayloadBytes int           `env:"MAX_PAYLOAD_BYTES" envDefault:"65536"`
	OutboxMaxAge    time.Duration `env:"OUTBOX_MAX_AGE" envDefault:"24h"`
	RequestTimeout  time.Duration `env:"REQUEST_TIMEOUT" envDefault:"60s"`
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"10s"`
	HTTPListen      string        `env:"HTTP_LISTEN"`
	LogLevel        string        `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat       string        `env:"LOG_FORMAT" envDefault:"console"`
}

// Targets maps friendly names to room IDs, aliases or user IDs.
type Targets map[string]string

// UnmarshalText parses `name=target,name=target`.
func (t *Targets) UnmarshalText(text []byte) error {
	out := Targets{}
	for _, pair := range strings.Split(string(text), ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		name, target, ok := strings.Cut(pair, "=")
		name, target = strings.TrimSpace(name), strings.TrimSpace(target)
		if !ok || name == "" || target == "" {
			return fmt.Errorf("%q is not name=target", pair)
		}
		if err := validateFriendlyName(name); err != nil {
			return err
		}
		if err := validateTargetID(target); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if _, dup := out[name]; dup {
			return fmt.Errorf("%q is defined twice", name)
		}
		out[name] = target
	}
	*t = out
	return nil
}

func validateFriendlyName(name string) error {
	if strings.ContainsAny(name, "#+/:!@ \x00") {
		return fmt.Errorf("friendly name %q must not contain any of # + / : ! @ or spaces", name)
	}
	return nil
}

// validateTargetID checks the shape of a room ID, alias or user ID.
func validateTargetID(target string) error {
	switch {
	case strings.HasPrefix(target, "!"):
		if !strings.Contains(target, ":") && len(target) < 2 {
			return fmt.Errorf("%q is not a valid room ID", target)
		}
	case strings.HasPrefix(target, "#"):
		if !strings.Contains(target, ":") || len(target) < 4 {
			return fmt.Errorf("%q is not a valid room alias (#name:server)", target)
		}
	case strings.HasPrefix(target, "@"):
		if _, _, err := id.UserID(target).ParseAndValidateRelaxed(); err != nil {
			return fmt.Errorf("%q is not a valid user ID: %w", target, err)
		}
	default:
		return fmt.Errorf("%q is not a room ID (!…), alias (#…) or user ID (@…)", target)
	}
	if strings.ContainsAny(target, " \x00") {
		return fmt.Errorf("%q contains a space", target)
	}
	return nil
}

// LoadConfig reads the configuration from environ (KEY=value strings, as from os.Environ).
// Every setting can also come from a file named by KEY_FILE, for secrets.
func LoadConfig(environ []string) (Config, error) {
	vars := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	var cfg Config
	params, err := env.GetFieldParams(&cfg)
	if err != nil {
		return cfg, fmt.Errorf("failed to read config fields: %w", err)
	}
	for _, p := range params {
		path, ok := vars[p.Key+"_FILE"]
		if !ok {
			continue
		}
		if _, both := vars[p.Key]; both {
			return cfg, fmt.Errorf("%s and %s_FILE are both set: use one", p.Key, p.Key)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("%s_FILE: %w", p.Key, err)
		}
		vars[p.Key] = strings.TrimRight(string(data), "\r\n")
	}
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: vars}); err != nil {
		return cfg, fmt.Errorf("invalid configuration: %w", nameSettings(err))
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("invalid configuration: %w", err)
	}
	return cfg, nil
}

// nameSettings rewrites env's parse errors, which name Go fields, to name the settings.
func nameSettings(err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	keys := map[string][]string{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			if tag, ok := f.Tag.Lookup("env"); ok {
				key, _, _ := strings.Cut(tag, ",")
				keys[f.Name] = append(keys[f.Name], key)
			} else if f.Type.Kind() == reflect.Struct {
				walk(f.Type)
			}
		}
	}
	walk(reflect.TypeOf(Config{}))
	msgs := make([]string, 0, len(agg.Errors))
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) && len(keys[pe.Name]) > 0 {
			msgs = append(msgs, fmt.Sprintf("%s: %v", strings.Join(keys[pe.Name], " or "), pe.Err))
			continue
		}
		msgs = append(msgs, e.Error())
	}
	return errors.New(strings.Join(msgs, "; "))
}

// Validate reports the first setting that cannot work, naming it.
func (c Config) Validate() error {
	if err := c.Matrix.Validate(); err != nil {
		return err
	}
	if err := c.MQTT.Validate(); err != nil {
		return err
	}
	if c.DataDir == "" {
		return errors.New("DATA_DIR: must not be empty")
	}
	if _, _, err := c.database(); err != nil {
		return err
	}
	for _, a := range c.AllowedTargets {
		if _, friendly := c.Targets[a]; friendly {
			continue
		}
		if err := validateTargetID(a); err != nil {
			return fmt.Errorf("ALLOWED_TARGETS: %w", err)
		}
	}
	if err := c.Discovery.Validate(); err != nil {
		return err
	}
	if err := c.Commands.validate(c.Targets); err != nil {
		return err
	}
	if c.MaxPayloadBytes < 1024 {
		return errors.New("MAX_PAYLOAD_BYTES: must be at least 1024")
	}
	if c.OutboxMaxAge < time.Second {
		return errors.New("OUTBOX_MAX_AGE: must be at least 1s")
	}
	if c.RequestTimeout < time.Second {
		return errors.New("REQUEST_TIMEOUT: must be at least 1s")
	}
	if c.ShutdownTimeout < 0 {
		return errors.New("SHUTDOWN_TIMEOUT: must not be negative")
	}
	switch c.LogLevel {
	case "trace", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("LOG_LEVEL: %q is not one of trace, debug, info, warn, error", c.LogLevel)
	}
	switch c.LogFormat {
	case "console", "json":
	default:
		return fmt.Errorf("LOG_FORMAT: %q is not console or json", c.LogFormat)
	}
	return nil
}

// database returns the database driver and where the database is: a PostgreSQL URL, or the
// path of the SQLite file (DATA_DIR/matrix2mqtt.db unless DATABASE_URL names another).
func (c Config) database() (driver, location string, err error) {
	switch {
	case c.DatabaseURL == "":
		return "sqlite3-fk-wal", filepath.Join(c.DataDir, "matrix2mqtt.db"), nil
	case strings.HasPrefix(c.DatabaseURL, "postgres://"), strings.HasPrefix(c.DatabaseURL, "postgresql://"):
		return "postgres", c.DatabaseURL, nil
	case strings.HasPrefix(c.DatabaseURL, "sqlite:"), strings.HasPrefix(c.DatabaseURL, "file:"):
		return "sqlite3-fk-wal", strings.TrimPrefix(strings.TrimPrefix(c.DatabaseURL, "sqlite:"), "file:"), nil
	}
	return "", "", fmt.Errorf("DATABASE_URL: %q is neither postgres://… nor sqlite:PATH", c.DatabaseURL)
}

// ReadEnvFile reads KEY=value lines (blank lines and # comments skipped, optional quotes) and
// returns them as environ entries, for the -env-file flag.
func ReadEnvFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to open env file: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			return nil, fmt.Errorf("failed to read env file %s line %d: not KEY=value", path, n)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		out = append(out, strings.TrimSpace(k)+"="+v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("failed to read env file: %w", err)
	}
	return out, nil
}
