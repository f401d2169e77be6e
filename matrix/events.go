package matrix

import (
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Kind says what an inbound Event is; it is also the last segment of its MQTT topic.
type Kind string

// The kinds of inbound events.
const (
	KindMessage   Kind = "message"
	KindReaction  Kind = "reaction"
	KindRedaction Kind = "redaction"
)

// Event is one inbound event from another user, normalised. Payload is a *Message, *Reaction or
// *Redaction, ready to be encoded as JSON.
type Event struct {
	Kind    Kind
	RoomID  id.RoomID
	ID      id.EventID
	Payload any
}

// Batch is what one sync response produced.
type Batch struct {
	Events  []Event
	Notices []Notice

	initial bool
	invites []*event.Event
	// roomsChanged is set when the joined rooms or their details changed.
	roomsChanged bool
	// undecrypted are the encrypted events of this sync that are still waiting for their keys.
	undecrypted map[id.EventID]*event.Event
}

// EventIDs returns the IDs of the batch's events, in timeline order.
func (b *Batch) EventIDs() []id.EventID {
	ids := make([]id.EventID, len(b.Events))
	for i, ev := range b.Events {
		ids[i] = ev.ID
	}
	return ids
}

// Media describes the attachment of a media message.
type Media struct {
	MXC       id.ContentURIString `json:"mxc"`
	Mimetype  string              `json:"mimetype,omitempty"`
	Size      int                 `json:"size,omitempty"`
	Filename  string              `json:"filename,omitempty"`
	Width     int                 `json:"width,omitempty"`
	Height    int                 `json:"height,omitempty"`
	Encrypted bool                `json:"encrypted"`
}

// Message is an inbound m.room.message (or its edit).
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

// Reaction is an inbound m.reaction.
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
}

// Redaction is an inbound m.room.redaction.
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

// normalise maps a timeline event to an inbound Event; ok is false for events the bridge does not
// publish. Names are filled in by the caller.
func normalise(evt *event.Event) (Event, bool) {
	encrypted := evt.Mautrix.WasEncrypted
	switch evt.Type {
	case event.EventMessage, event.EventSticker:
		content, ok := evt.Content.Parsed.(*event.MessageEventContent)
		if !ok {
			return Event{}, false
		}
		msg := &Message{
			EventID:        evt.ID,
			RoomID:         evt.RoomID,
			Sender:         evt.Sender,
			Timestamp:      evt.Timestamp,
			Encrypted:      encrypted,
			SenderVerified: evt.Mautrix.TrustState >= id.TrustStateCrossSignedTOFU,
		}
		if rel := content.RelatesTo; rel != nil {
			msg.Thread = rel.GetThreadParent()
			msg.ReplyTo = rel.GetNonFallbackReplyTo()
			if edit := rel.GetReplaceID(); edit != "" && content.NewContent != nil {
				msg.EditOf = edit
				content = content.NewContent
			}
		}
		msg.MsgType = string(content.MsgType)
		if evt.Type == event.EventSticker {
			msg.MsgType = event.EventSticker.Type
		}
		msg.Body = content.Body
		if content.Format == event.FormatHTML {
			msg.FormattedBody = content.FormattedBody
		}
		if content.Mentions != nil {
			msg.Mentions = content.Mentions.UserIDs
			msg.MentionsRoom = content.Mentions.Room
		}
		msg.GeoURI = content.GeoURI
		msg.Media = mediaOf(content)
		if msg.Media != nil && msg.Media.Filename != "" && msg.Body == msg.Media.Filename {
			msg.Body = ""
		}
		return Event{Kind: KindMessage, RoomID: evt.RoomID, ID: evt.ID, Payload: msg}, true
	case event.EventReaction:
		content, ok := evt.Content.Parsed.(*event.ReactionEventContent)
		if !ok || content.RelatesTo.Type != event.RelAnnotation {
			return Event{}, false
		}
		return Event{Kind: KindReaction, RoomID: evt.RoomID, ID: evt.ID, Payload: &Reaction{
			EventID:   evt.ID,
			RoomID:    evt.RoomID,
			Sender:    evt.Sender,
			RelatesTo: content.RelatesTo.EventID,
			Key:       content.RelatesTo.Key,
			Timestamp: evt.Timestamp,
			Encrypted: encrypted,
		}}, true
	case event.EventRedaction:
		content, _ := evt.Content.Parsed.(*event.RedactionEventContent)
		red := &Redaction{EventID: evt.ID, RoomID: evt.RoomID, Sender: evt.Sender, Redacts: evt.Redacts, Timestamp: evt.Timestamp}
		if content != nil {
			red.Reason = content.Reason
			if content.Redacts != "" {
				red.Redacts = content.Redacts
			}
		}
		return Event{Kind: KindRedaction, RoomID: evt.RoomID, ID: evt.ID, Payload: red}, true
	}
	return Event{}, false
}

func mediaOf(content *event.MessageEventContent) *Media {
	if !content.MsgType.IsMedia() && content.URL == "" && content.File == nil {
		return nil
	}
	m := &Media{MXC: content.URL, Filename: content.GetFileName()}
	if content.File != nil {
		m.MXC = content.File.URL
		m.Encrypted = true
	}
	if info := content.Info; info != nil {
		m.Mimetype, m.Size, m.Width, m.Height = info.MimeType, info.Size, info.Width, info.Height
	}
	return m
}
