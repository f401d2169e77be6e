// Command matrix2mqtt runs the Matrix ⇄ MQTT bridge. With no arguments it runs the bridge from
// the environment; `version`, `check-config` and `healthcheck` are one-off tasks.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/matrix2mqtt/matrix2mqtt/bridge"
)

// usage lists the subcommands.
const usage = `Usage: matrix2mqtt [-env-file FILE] [COMMAND]

Commands:
  run            run the bridge (the default)
  check-config   check the settings and print the effective configuration, secrets masked
  healthcheck    exit 0 if the running bridge's /healthz answers 200 (for Docker HEALTHCHECK)
  e2ee status    report the encryption state of the bot's device, changing nothing
  version        print the version
  help           print this help

Settings come from the environment (NAME=value, or NAME_FILE=path for any of them); every
setting is described in configs/example.env. Operations: docs/operations.md.

Flags:
`

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "matrix2mqtt:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("matrix2mqtt", flag.ContinueOnError)
	fs.SetOutput(stderr)
	envFile := fs.String("env-file", "", "read settings from this KEY=value file (the environment wins)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	cmd := "run"
	if fs.NArg() > 0 {
		cmd = fs.Arg(0)
	}
	if cmd == "help" {
		fs.SetOutput(stdout)
		fs.Usage()
		return nil
	}
	if cmd == "version" {
		fmt.Fprintln(stdout, version)
		return nil
	}
	environ := os.Environ()
	if *envFile != "" {
		fileEnv, err := bridge.ReadEnvFile(*envFile)
		if err != nil {
			return err
		}
		environ = append(fileEnv, environ...)
		environ = dedupe(environ)
	}
	if cmd == "check-config" {
		return bridge.PrintConfig(stdout, environ)
	}
	cfg, err := bridge.LoadConfig(environ)
	if err != nil {
		return err
	}
	switch cmd {
	case "healthcheck":
		return healthcheck(cfg.HTTPListen)
	case "e2ee":
		if fs.Arg(1) != "status" {
			return fmt.Errorf("usage: matrix2mqtt e2ee status")
		}
		ctx := newLogger(cfg, stderr).Level(zerolog.WarnLevel).WithContext(context.Background())
		status, err := bridge.CheckE2EE(ctx, cfg)
		if err != nil {
			return err
		}
		out := json.NewEncoder(stdout)
		out.SetIndent("", "  ")
		return out.Encode(status)
	case "run":
	default:
		fs.Usage()
		return fmt.Errorf("unknown command %q", cmd)
	}

	log := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = log.WithContext(ctx)
	log.Info().Str("version", version).Msg("Starting matrix2mqtt")
	return bridge.Run(ctx, cfg, bridge.Options{Version: version})
}

// dedupe keeps the last value of each key, so the real environment overrides the env file.
func dedupe(environ []string) []string {
	seen := map[string]int{}
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := seen[k]; ok {
			out[i] = kv
			continue
		}
		seen[k] = len(out)
		out = append(out, kv)
	}
	return out
}

func newLogger(cfg bridge.Config, w io.Writer) zerolog.Logger {
	level, _ := zerolog.ParseLevel(cfg.LogLevel)
	if cfg.LogFormat == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.DateTime}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

// healthcheck asks a running bridge's HTTP_LISTEN endpoint whether it is healthy.
func healthcheck(listen string) error {
	if listen == "" {
		return errors.New("HTTP_LISTEN is not set, so there is no health endpoint to ask")
	}
	host := listen
	if strings.HasPrefix(host, ":") || strings.HasPrefix(host, "0.0.0.0:") {
		host = "127.0.0.1:" + host[strings.LastIndex(host, ":")+1:]
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + host + "/healthz")
	if err != nil {
		return fmt.Errorf("failed to reach the health endpoint: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("unhealthy: HTTP %d", resp.StatusCode)
	}
	return nil
}
