package store

import (
	"context"
	"fmt"
	"time"
)

// The matrix2mqtt_done table: keys of MQTT messages whose requests are done. The broker may
// deliver a message again after a crash even when the bridge acknowledged it (the PUBACK was
// still in the client's send queue), so their keys are remembered for DoneRetention.

// Seen reports whether the MQTT message with this key is in the outbox or was done lately.
func (s *Store) Seen(ctx context.Context, mqttKey string) (bool, error) {
	var found bool
	err := s.db.QueryRow(ctx, `SELECT EXISTS(SELECT 1 FROM matrix2mqtt_outbox WHERE mqtt_key=$1)
		OR EXISTS(SELECT 1 FROM matrix2mqtt_done WHERE mqtt_key=$1)`, mqttKey).Scan(&found)
	if err != nil {
		return false, fmt.Errorf("failed to look up redelivered message: %w", err)
	}
	return found, nil
}

// insertDone remembers the keys of done messages, in the caller's transaction.
func (s *Store) insertDone(ctx context.Context, keys []string, now time.Time) error {
	return s.insertRows(ctx, "matrix2mqtt_done (mqtt_key, done_at)", "ON CONFLICT (mqtt_key) DO NOTHING", 2, len(keys),
		func(i int, args []any) []any { return append(args, keys[i], now.UnixMilli()) })
}

func (s *Store) pruneDone(ctx context.Context, before time.Time) error {
	if _, err := s.db.Exec(ctx, "DELETE FROM matrix2mqtt_done WHERE done_at < $1", before.UnixMilli()); err != nil {
		return fmt.Errorf("failed to prune done keys: %w", err)
	}
	return nil
}

// DoneKeys counts the remembered keys of done messages.
func (s *Store) DoneKeys(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRow(ctx, "SELECT COUNT(*) FROM matrix2mqtt_done").Scan(&n); err != nil {
		return 0, fmt.Errorf("failed to count done keys: %w", err)
	}
	return n, nil
}
