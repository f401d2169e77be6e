package store

import (
	"context"
	"fmt"

	"maunium.net/go/mautrix/id"
)

// The matrix2mqtt_room_key table: friendly names that create_room gave to the rooms it made.

// SaveRoomKey remembers that key names roomID.
func (s *Store) SaveRoomKey(ctx context.Context, key string, roomID id.RoomID) error {
	_, err := s.db.Exec(ctx, `INSERT INTO matrix2mqtt_room_key (key, room_id) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET room_id=excluded.room_id`, key, roomID)
	if err != nil {
		return fmt.Errorf("failed to save room key: %w", err)
	}
	return nil
}

// RoomKeys returns every remembered key and its room.
func (s *Store) RoomKeys(ctx context.Context) (map[string]id.RoomID, error) {
	rows, err := s.db.Query(ctx, "SELECT key, room_id FROM matrix2mqtt_room_key")
	if err != nil {
		return nil, fmt.Errorf("failed to load room keys: %w", err)
	}
	defer rows.Close()
	out := map[string]id.RoomID{}
	for rows.Next() {
		var key string
		var roomID id.RoomID
		if err := rows.Scan(&key, &roomID); err != nil {
			return nil, fmt.Errorf("failed to load room keys: %w", err)
		}
		out[key] = roomID
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("failed to load room keys: %w", err)
	}
	return out, nil
}

// The matrix2mqtt_room_upgrade table: rooms replaced by an upgrade that the bot followed.

// SaveRoomUpgrade records that newRoom replaced oldRoom and moves oldRoom's keys to it.
func (s *Store) SaveRoomUpgrade(ctx context.Context, oldRoom, newRoom id.RoomID) error {
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if _, err := s.db.Exec(ctx, `INSERT INTO matrix2mqtt_room_upgrade (old_room_id, new_room_id) VALUES ($1, $2)
			ON CONFLICT (old_room_id) DO UPDATE SET new_room_id=excluded.new_room_id`, oldRoom, newRoom); err != nil {
			return err
		}
		_, err := s.db.Exec(ctx, "UPDATE matrix2mqtt_room_key SET room_id=$2 WHERE room_id=$1", oldRoom, newRoom)
		return err
	})
	if err != nil {
		return fmt.Errorf("failed to save room upgrade: %w", err)
	}
	return nil
}

// RoomUpgrades returns every followed upgrade, old room → new room.
func (s *Store) RoomUpgrades(ctx context.Context) (map[id.RoomID]id.RoomID, error) {
	rows, err := s.db.Query(ctx, "SELECT old_room_id, new_room_id FROM matrix2mqtt_room_upgrade")
	if err != nil {
		return nil, fmt.Errorf("failed to load room upgrades: %w", err)
	}
	defer rows.Close()
	out := map[id.RoomID]id.RoomID{}
	for rows.Next() {
		var oldRoom, newRoom id.RoomID
		if err := rows.Scan(&oldRoom, &newRoom); err != nil {
			return nil, fmt.Errorf("failed to load room upgrades: %w", err)
		}
		out[oldRoom] = newRoom
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("failed to load room upgrades: %w", err)
	}
	return out, nil
}
