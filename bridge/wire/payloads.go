package wire

import (
	"time"

	"maunium.net/go/mautrix/id"
)

// Stats is the retained payload of `<base>/bridge/stats` and the data of `outbox_stats`.
type Stats struct {
	OutboxPending int `json:"outbox_pending"`
	// ScheduledRedactions are redact_after_s redactions waiting for their time.
	ScheduledRedactions int       `json:"scheduled_redactions"`
	OldestPendingAgeS   float64   `json:"oldest_pending_age_s"`
	Sent                int64     `json:"sent"`
	Failed              int64     `json:"failed"`
	Expired             int64     `json:"expired"`
	Inbound             int64     `json:"inbound"`
	LastError           string    `json:"last_error,omitempty"`
	LastErrorAt         time.Time `json:"last_error_at,omitzero"`
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

// Inbound kinds that are not Matrix events of their own: the last segment of
// `<base>/room/<key>/<kind>`.
const (
	// KindCommand carries accepted chat commands.
	KindCommand = "command"
	// KindEvent feeds the Home Assistant event entity of a friendly-name room.
	KindEvent = "event"
)
