package matrix

import (
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Event is one inbound event from another user, normalised. Payload is a *wire.Message,
// *wire.Reaction or *wire.Redaction, ready to be encoded as JSON, or a *wire.PollVote, which
// has no Kind: it is for the filters only.
type Event struct {
	Kind    wire.Kind
	RoomID  id.RoomID
	ID      id.EventID
	Payload any
}

// Batch is what one sync response produced.
type Batch struct {
	Events  []Event
	Notices []wire.Notice
	// Receipts are other users' public read receipts.
	Receipts []Receipt

	initial bool
	invites []*event.Event
	// tombstones are the m.room.tombstone events of joined rooms, followed after the hand-over.
	tombstones []*event.Event
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
		msg := &wire.Message{
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
		return Event{Kind: wire.KindMessage, RoomID: evt.RoomID, ID: evt.ID, Payload: msg}, true
	case event.EventReaction:
		content, ok := evt.Content.Parsed.(*event.ReactionEventContent)
		if !ok || content.RelatesTo.Type != event.RelAnnotation {
			return Event{}, false
		}
		return Event{Kind: wire.KindReaction, RoomID: evt.RoomID, ID: evt.ID, Payload: &wire.Reaction{
			EventID:   evt.ID,
			RoomID:    evt.RoomID,
			Sender:    evt.Sender,
			RelatesTo: content.RelatesTo.EventID,
			Key:       content.RelatesTo.Key,
			Timestamp: evt.Timestamp,
			Encrypted: encrypted,
			// As for messages: only a device cross-signed by its owner counts.
			SenderVerified: evt.Mautrix.TrustState >= id.TrustStateCrossSignedTOFU,
		}}, true
	case event.EventUnstablePollResponse:
		content, ok := evt.Content.Parsed.(*event.PollResponseEventContent)
		if !ok || content.RelatesTo.Type != event.RelReference || content.RelatesTo.EventID == "" {
			return Event{}, false
		}
		// No kind: a vote is not published on its own, the tally of the poll is.
		return Event{RoomID: evt.RoomID, ID: evt.ID, Payload: &wire.PollVote{
			EventID: evt.ID, RoomID: evt.RoomID, Sender: evt.Sender, Poll: content.RelatesTo.EventID,
			Answers: content.Response.Answers, Timestamp: evt.Timestamp,
		}}, true
	case event.EventRedaction:
		content, _ := evt.Content.Parsed.(*event.RedactionEventContent)
		red := &wire.Redaction{EventID: evt.ID, RoomID: evt.RoomID, Sender: evt.Sender, Redacts: evt.Redacts, Timestamp: evt.Timestamp}
		if content != nil {
			red.Reason = content.Reason
			if content.Redacts != "" {
				red.Redacts = content.Redacts
			}
		}
		return Event{Kind: wire.KindRedaction, RoomID: evt.RoomID, ID: evt.ID, Payload: red}, true
	}
	return Event{}, false
}

func mediaOf(content *event.MessageEventContent) *wire.Media {
	if !content.MsgType.IsMedia() && content.URL == "" && content.File == nil {
		return nil
	}
	m := &wire.Media{MXC: content.URL, Filename: content.GetFileName()}
	if content.File != nil {
		m.MXC = content.File.URL
		m.Encrypted = true
		file := content.File.EncryptedFile
		m.File = &file
	}
	if info := content.Info; info != nil {
		m.Mimetype, m.Size, m.Width, m.Height = info.MimeType, info.Size, info.Width, info.Height
	}
	return m
}
