package wire

import (
	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Kind is what an inbound payload is; it is the last segment of `<base>/room/<key>/<kind>`.
type Kind string

// The inbound kinds.
const (
	KindMessage   Kind = "message"
	KindReaction  Kind = "reaction"
	KindRedaction Kind = "redaction"
	// KindCommand carries accepted chat commands.
	KindCommand Kind = "command"
	// KindEvent feeds the Home Assistant event entity of a friendly-name room.
	KindEvent Kind = "event"
	// KindMembership carries membership and power level changes in joined rooms.
	KindMembership Kind = "membership"
)

// Media describes the attachment of a media message.
type Media struct {
	MXC       id.ContentURIString `json:"mxc"`
	Mimetype  string              `json:"mimetype,omitempty"`
	Size      int                 `json:"size,omitempty"`
	Filename  string              `json:"filename,omitempty"`
	Width     int                 `json:"width,omitempty"`
	Height    int                 `json:"height,omitempty"`
	Encrypted bool                `json:"encrypted"`
	// Path is where MEDIA_DOWNLOAD_DIR holds the downloaded (and decrypted) file.
	Path string `json:"path,omitempty"`
	// File is the key and hash of an encrypted file; never published.
	File *attachment.EncryptedFile `json:"-"`
}

// Message is the payload of `<base>/room/<key>/message`: an m.room.message (or its edit).
type Message struct {
	EventID        id.EventID  `json:"event_id"`
	RoomID         id.RoomID   `json:"room_id"`
	RoomName       string      `json:"room_name,omitempty"`
	Sender         id.UserID   `json:"sender"`
	SenderName     string      `json:"sender_name"`
	MsgType        string      `json:"msgtype"`
	Body           string      `json:"body"`
	FormattedBody  string      `json:"formatted_body,omitempty"`
	Timestamp      int64       `json:"ts"`
	Encrypted      bool        `json:"encrypted"`
	SenderVerified bool        `json:"sender_verified"`
	ReplyTo        id.EventID  `json:"reply_to,omitempty"`
	Thread         id.EventID  `json:"thread,omitempty"`
	EditOf         id.EventID  `json:"edit_of,omitempty"`
	Mentions       []id.UserID `json:"mentions,omitempty"`
	MentionsRoom   bool        `json:"mentions_room,omitempty"`
	GeoURI         string      `json:"geo_uri,omitempty"`
	Media          *Media      `json:"media,omitempty"`
}

// Reaction is the payload of `<base>/room/<key>/reaction`.
type Reaction struct {
	EventID    id.EventID `json:"event_id"`
	RoomID     id.RoomID  `json:"room_id"`
	RoomName   string     `json:"room_name,omitempty"`
	Sender     id.UserID  `json:"sender"`
	SenderName string     `json:"sender_name"`
	RelatesTo  id.EventID `json:"relates_to"`
	Key        string     `json:"key"`
	Timestamp  int64      `json:"ts"`
	Encrypted  bool       `json:"encrypted"`
	// SenderVerified: the reaction came from a device cross-signed by its owner.
	SenderVerified bool `json:"sender_verified"`
}

// Redaction is the payload of `<base>/room/<key>/redaction`.
type Redaction struct {
	EventID    id.EventID `json:"event_id"`
	RoomID     id.RoomID  `json:"room_id"`
	RoomName   string     `json:"room_name,omitempty"`
	Sender     id.UserID  `json:"sender"`
	SenderName string     `json:"sender_name"`
	Redacts    id.EventID `json:"redacts"`
	Reason     string     `json:"reason,omitempty"`
	Timestamp  int64      `json:"ts"`
}

// Notice is the payload of `<base>/bridge/event`: something the operator should know.
type Notice struct {
	Type    string    `json:"type"`
	RoomID  id.RoomID `json:"room_id,omitempty"`
	UserID  id.UserID `json:"user,omitempty"`
	Sender  id.UserID `json:"sender,omitempty"`
	Message string    `json:"message,omitempty"`
	// Membership is set for type "membership" and "invite".
	Membership event.Membership `json:"membership,omitempty"`
	// ReplacementRoom is set for type "room_upgraded" and "room_upgrade_failed".
	ReplacementRoom id.RoomID `json:"replacement_room,omitempty"`
}

// Membership is the payload of `<base>/room/<key>/membership`: a member joined, left, was
// invited, kicked, banned or unbanned, or the power levels changed.
type Membership struct {
	EventID    id.EventID `json:"event_id"`
	RoomID     id.RoomID  `json:"room_id"`
	RoomName   string     `json:"room_name,omitempty"`
	Sender     id.UserID  `json:"sender"`
	SenderName string     `json:"sender_name"`
	// Change is join, leave, invite, knock, kick, ban, unban or power_levels.
	Change     string           `json:"change"`
	User       id.UserID        `json:"user,omitempty"`
	Membership event.Membership `json:"membership,omitempty"`
	Reason     string           `json:"reason,omitempty"`
	// Levels are the users whose power level changed, for power_levels.
	Levels    []LevelChange `json:"levels,omitempty"`
	Timestamp int64         `json:"ts"`
}

// LevelChange is one user's new power level.
type LevelChange struct {
	User id.UserID `json:"user"`
	From int       `json:"from"`
	To   int       `json:"to"`
}
