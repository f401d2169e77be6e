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
