package integration

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge"
)

// TestRecoveryKeyWrittenBeforeUpload: when the recovery key file cannot be written, the bridge
// stops with an error before it uploads any cross-signing key, so no key exists on the server
// that nobody has the recovery key of. With the file writable, the next start creates them.
func TestRecoveryKeyWrittenBeforeUpload(t *testing.T) {
	bot := newUser(t, "bot")
	dataDir := t.TempDir()
	// A directory where the key file goes: writing the file fails.
	blocker := filepath.Join(dataDir, "recovery-key.txt")
	if err := os.Mkdir(blocker, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg, err := bridge.LoadConfig([]string{
		"MATRIX_HOMESERVER=" + env.HomeserverURL, "MATRIX_USER_ID=" + bot.UserID, "MATRIX_PASSWORD=" + bot.Password,
		"MQTT_URL=" + env.MQTTURL, "MQTT_CLIENT_ID=rk" + bot.UserID[1:6], "MQTT_BASE_TOPIC=rkey", "DATA_DIR=" + dataDir,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(zerolog.New(testLogWriter(t)).WithContext(context.Background()), time.Minute)
	defer cancel()
	err = bridge.Run(ctx, cfg, bridge.Options{Version: "test"})
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("bridge.Run = %v, want the failure to save the recovery key", err)
	}
	t.Logf("bridge stopped as expected: %v", err)
	if keys := masterKeyOf(t, bot); keys != "" {
		t.Fatalf("cross-signing master key %s was uploaded although its recovery key was not saved", keys)
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- bridge.Run(runCtx, cfg, bridge.Options{Version: "test"}) }()
	eventually(t, 30*time.Second, func() error {
		if _, err := os.Stat(blocker); err != nil {
			return err
		}
		if masterKeyOf(t, bot) == "" {
			return errors.New("no master key yet")
		}
		return nil
	})
	stop()
	if err := <-done; err != nil {
		t.Fatalf("bridge stopped with error: %v", err)
	}
	if info, err := os.Stat(blocker); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("recovery key file: %v, %v", info, err)
	}
}

// masterKeyOf returns the cross-signing master key the homeserver has for u, or "".
func masterKeyOf(t *testing.T, u *user) string {
	t.Helper()
	resp, err := u.cli.QueryKeys(context.Background(), &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{id.UserID(u.UserID): {}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range resp.MasterKeys[id.UserID(u.UserID)].Keys {
		return key.String()
	}
	return ""
}
