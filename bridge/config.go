package bridge

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/inbound"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/media"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/roomconf"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
	"github.com/matrix2mqtt/matrix2mqtt/discovery"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// Config is the whole bridge configuration; each part owns its section.
type Config struct {
	Matrix    matrix.Config
	MQTT      mqtt.Config
	Discovery discovery.Config
	Commands  inbound.CommandConfig
	Callbacks inbound.CallbackConfig
	Live      actions.LiveConfig
	Targets   targets.Config
	Rooms     roomconf.Config
	Media     media.Config

	DataDir         string        `env:"DATA_DIR" envDefault:"./data"`
	DatabaseURL     string        `env:"DATABASE_URL"`
	MaxPayloadBytes int           `env:"MAX_PAYLOAD_BYTES" envDefault:"65536"`
	OutboxMaxAge    time.Duration `env:"OUTBOX_MAX_AGE" envDefault:"24h"`
	RequestTimeout  time.Duration `env:"REQUEST_TIMEOUT" envDefault:"60s"`
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"10s"`
	HTTPListen      string        `env:"HTTP_LISTEN"`
	LogLevel        string        `env:"LOG_LEVEL" envDefault:"info"`
	LogFormat       string        `env:"LOG_FORMAT" envDefault:"console"`
	// HTTPToken, when set, is the bearer token that /stats and /metrics require.
	HTTPToken string `env:"HTTP_TOKEN"`
}

// LoadConfig reads the configuration from environ (KEY=value strings, as from os.Environ).
// Every setting can also come from a file named by KEY_FILE, for secrets.
func LoadConfig(environ []string) (Config, error) {
	var cfg Config
	vars, _, err := settings(environ)
	if err != nil {
		return cfg, err
	}
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: vars}); err != nil {
		return cfg, fmt.Errorf("invalid configuration: %w", nameSettings(err))
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("invalid configuration: %w", err)
	}
	return cfg, nil
}

// settings returns the variables of environ with each KEY_FILE read into KEY, and the
// settings' parameters.
func settings(environ []string) (map[string]string, []env.FieldParams, error) {
	vars := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	params, err := env.GetFieldParams(&Config{})
	if err != nil {
		return nil, nil, fmt.Errorf("failed to read config fields: %w", err)
	}
	for _, p := range params {
		path, ok := vars[p.Key+"_FILE"]
		if !ok {
			continue
		}
		if _, both := vars[p.Key]; both {
			return nil, nil, fmt.Errorf("%s and %s_FILE are both set: use one", p.Key, p.Key)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("%s_FILE: %w", p.Key, err)
		}
		vars[p.Key] = strings.TrimRight(string(data), "\r\n")
	}
	return vars, params, nil
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
	if _, _, err := store.Location(c.DataDir, c.DatabaseURL); err != nil {
		return err
	}
	if err := c.Targets.Validate(); err != nil {
		return err
	}
	if err := c.Discovery.Validate(); err != nil {
		return err
	}
	if err := c.Commands.Validate(c.Targets.Names); err != nil {
		return err
	}
	if err := c.Rooms.Validate(c.Targets.Names); err != nil {
		return err
	}
	if err := c.Live.Validate(); err != nil {
		return err
	}
	if err := c.Media.Validate(); err != nil {
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
