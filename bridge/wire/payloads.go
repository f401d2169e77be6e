package wire

import (
	"time"

	"maunium.net/go/mautrix/id"
)

// Stats is the retained payload of `<base>/bridge/stats` and the data of `outbox_stats`.
type Stats struct {
	OutboxPending int `json:"outbox_pending"`
	// ScheduledRedactions are redact_after_s redactions waiting for their time.
	ScheduledRedactions int `json:"scheduled_redactions"`
	// ScheduledMessages are requests waiting for their `at` or `delay_s`.
	ScheduledMessages int       `json:"scheduled_messages"`
	OldestPendingAgeS float64   `json:"oldest_pending_age_s"`
	Sent              int64     `json:"sent"`
	Failed            int64     `json:"failed"`
	Expired           int64     `json:"expired"`
	Inbound           int64     `json:"inbound"`
	LastError         string    `json:"last_error,omitempty"`
	LastErrorAt       time.Time `json:"last_error_at,omitzero"`
	// MatrixConnected is whether the last Matrix sync succeeded.
	MatrixConnected bool `json:"matrix_connected"`
}

// Command is the payload of `<base>/room/<key>/command` and `<base>/command/<name>`.
type Command struct {
	Command        string     `json:"command"`
	Args           []string   `json:"args"`
	Raw            string     `json:"raw"`
	Sender         id.UserID  `json:"sender"`
	SenderName     string     `json:"sender_name"`
	RoomID         id.RoomID  `json:"room_id"`
	RoomName       string     `json:"room_name,omitempty"`
	EventID        id.EventID `json:"event_id"`
	SenderVerified bool       `json:"sender_verified"`
	Timestamp      int64      `json:"ts"`
}

// Room is one joined room, as listed on `<base>/bridge/rooms` and by `list_rooms`.
type Room struct {
	ID        id.RoomID    `json:"room_id"`
	Name      string       `json:"name,omitempty"`
	Alias     id.RoomAlias `json:"alias,omitempty"`
	Encrypted bool         `json:"encrypted"`
	IsDM      bool         `json:"is_dm"`
	DMUser    id.UserID    `json:"dm_user,omitempty"`
	Members   int          `json:"members"`
	// PowerLevel is the bot's own power level in the room.
	PowerLevel int `json:"power_level"`
}

// RoomInfo is a joined room with its topic key.
type RoomInfo struct {
	Room
	Key string `json:"key"`
}

// E2EEStatus is the encryption state of the bot's device, in `<base>/bridge/info` and from
// `matrix2mqtt e2ee status`.
type E2EEStatus struct {
	Enabled bool `json:"enabled"`
	// Status sums it up: disabled, verified (the device is cross-signed by its owner),
	// unverified (cross-signing exists but this device is not signed), no_cross_signing.
	Status            string `json:"status"`
	DeviceID          string `json:"device_id,omitempty"`
	IdentityKey       string `json:"identity_key,omitempty"`
	CrossSigning      bool   `json:"cross_signing"`
	DeviceCrossSigned bool   `json:"device_cross_signed"`
	MasterKey         string `json:"master_key,omitempty"`
	KeyBackup         bool   `json:"key_backup"`
	KeyBackupVersion  string `json:"key_backup_version,omitempty"`
	RecoveryKeyFile   string `json:"recovery_key_file,omitempty"`
}

// Info is the retained payload of `<base>/bridge/info`.
type Info struct {
	Version    string     `json:"version"`
	UserID     string     `json:"user_id"`
	DeviceID   string     `json:"device_id"`
	Homeserver string     `json:"homeserver"`
	BaseTopic  string     `json:"base_topic"`
	E2EE       E2EEStatus `json:"e2ee"`
	Targets    []string   `json:"targets"`
	StartedAt  time.Time  `json:"started_at"`
}

// Member is one member of a room, as listed by `members`.
type Member struct {
	UserID      id.UserID `json:"user_id"`
	DisplayName string    `json:"display_name,omitempty"`
	Membership  string    `json:"membership"`
	PowerLevel  int       `json:"power_level"`
}
