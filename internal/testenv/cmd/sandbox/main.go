// Command sandbox runs a Mosquitto broker and a Dendrite homeserver (internal/testenv) for
// trying the bridge by hand: it registers a bot account and a human account, writes an env
// file for the bridge, and runs until SIGINT or SIGTERM.
//
//	go run ./internal/testenv/cmd/sandbox -env-file /tmp/matrix2mqtt.env
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/internal/testenv"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		os.Exit(1)
	}
}

func run() error {
	envFile := flag.String("env-file", "", "write the bridge's environment (KEY=value lines) to this file")
	readyFile := flag.String("ready-file", "", "create this file once the servers run and the env file is written")
	botName := flag.String("bot", "bot", "localpart of the bridge's account")
	userName := flag.String("user", "alice", "localpart of the human account, also its friendly name in TARGETS")
	logDir := flag.String("log-dir", "", "directory for the server logs (default: inside the temp dir)")
	keep := flag.Bool("keep", false, "keep the temp dir after exiting")
	flag.Parse()
	if *envFile == "" {
		return errors.New("-env-file is required")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	started := time.Now()
	env, err := testenv.Start(ctx, testenv.Options{LogDir: *logDir, Keep: *keep})
	if err != nil {
		return err
	}
	err = serve(ctx, env, started, *envFile, *readyFile, *botName, *userName)
	return errors.Join(err, env.Close())
}

// serve registers the accounts, writes the env and ready files and waits for ctx to end.
func serve(ctx context.Context, env *testenv.Env, started time.Time, envFile, readyFile, botName, userName string) error {
	bot, err := env.RegisterUser(ctx, botName)
	if err != nil {
		return err
	}
	user, err := env.RegisterUser(ctx, userName)
	if err != nil {
		return err
	}
	vars := []string{
		"MATRIX_HOMESERVER=" + env.HomeserverURL,
		"MATRIX_USER_ID=" + bot.UserID,
		"MATRIX_PASSWORD=" + bot.Password,
		"MQTT_URL=" + env.MQTTURL,
		"DATA_DIR=" + filepath.Join(env.Dir, "data"),
		"TARGETS=" + userName + "=" + user.UserID,
		"AUTO_JOIN=" + user.UserID,
	}
	if err := os.WriteFile(envFile, []byte(strings.Join(vars, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("failed to write the env file: %w", err)
	}

	fmt.Printf("servers ready in %s, files in %s\n", time.Since(started).Round(time.Millisecond), env.Dir)
	fmt.Printf("homeserver    %s (server name %s)\n", env.HomeserverURL, env.ServerName)
	fmt.Printf("MQTT broker   %s\n", env.MQTTURL)
	fmt.Printf("bot           %s\n", bot.UserID)
	fmt.Printf("%-13s %s\n", userName, user.UserID)
	fmt.Printf("  password      %s\n", user.Password)
	fmt.Printf("  access token  %s\n", user.AccessToken)
	fmt.Printf("  device ID     %s\n", user.DeviceID)
	fmt.Printf("env file      %s\n", envFile)

	if readyFile != "" {
		if err := os.WriteFile(readyFile, []byte(env.HomeserverURL+"\n"), 0o644); err != nil {
			return fmt.Errorf("failed to write the ready file: %w", err)
		}
		defer os.Remove(readyFile)
	}
	<-ctx.Done()
	fmt.Println("stopping the servers")
	return nil
}
