// Package mapping maps Matrix events to the bridge's inbound payloads, without side effects.
package mapping

import (
	"errors"
	"maps"
	"slices"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// Timeline maps a timeline event to its inbound kind and payload (a *wire.Message,
// *wire.Reaction, *wire.Redaction, or a *wire.PollVote or *wire.PollEnd without a kind); ok is
// false for events the bridge does not publish. Room and sender names are left to the caller.
func Timeline(evt *event.Event) (kind wire.Kind, payload any, ok bool) {
	encrypted := evt.Mautrix.WasEncrypted
	switch evt.Type {
	case event.EventMessage, event.EventSticker:
		content, ok := evt.Content.Parsed.(*event.MessageEventContent)
		if !ok {
			return "", nil, false
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
		return wire.KindMessage, msg, true
	case event.EventReaction:
		content, ok := evt.Content.Parsed.(*event.ReactionEventContent)
		if !ok || content.RelatesTo.Type != event.RelAnnotation {
			return "", nil, false
		}
		return wire.KindReaction, &wire.Reaction{
			EventID:   evt.ID,
			RoomID:    evt.RoomID,
			Sender:    evt.Sender,
			RelatesTo: content.RelatesTo.EventID,
			Key:       content.RelatesTo.Key,
			Timestamp: evt.Timestamp,
			Encrypted: encrypted,
			// As for messages: only a device cross-signed by its owner counts.
			SenderVerified: evt.Mautrix.TrustState >= id.TrustStateCrossSignedTOFU,
		}, true
	case event.EventUnstablePollResponse:
		content, ok := evt.Content.Parsed.(*event.PollResponseEventContent)
		if !ok || content.RelatesTo.Type != event.RelReference || content.RelatesTo.EventID == "" {
			return "", nil, false
		}
		// No kind: a vote is not published on its own, the tally of the poll is.
		return "", &wire.PollVote{
			EventID: evt.ID, RoomID: evt.RoomID, Sender: evt.Sender, Poll: content.RelatesTo.EventID,
			Answers: content.Response.Answers, Timestamp: evt.Timestamp,
		}, true
	case event.EventUnstablePollEnd:
		// mautrix has no content type for it: the relation is read from the raw content.
		rel, _ := evt.Content.Raw["m.relates_to"].(map[string]any)
		poll, _ := rel["event_id"].(string)
		if rel["rel_type"] != string(event.RelReference) || poll == "" {
			return "", nil, false
		}
		return "", &wire.PollEnd{EventID: evt.ID, RoomID: evt.RoomID, Sender: evt.Sender, Poll: id.EventID(poll), Timestamp: evt.Timestamp}, true
	case event.EventRedaction:
		content, _ := evt.Content.Parsed.(*event.RedactionEventContent)
		red := &wire.Redaction{EventID: evt.ID, RoomID: evt.RoomID, Sender: evt.Sender, Redacts: evt.Redacts, Timestamp: evt.Timestamp}
		if content != nil {
			red.Reason = content.Reason
			if content.Redacts != "" {
				red.Redacts = content.Redacts
			}
		}
		return wire.KindRedaction, red, true
	}
	return "", nil, false
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

// MemberChange names a membership change: join, invite, knock, ban, leave (by the user
// themself), kick (by someone else) or unban.
func MemberChange(sender, user id.UserID, prev, now event.Membership) string {
	if now != event.MembershipLeave {
		return string(now)
	}
	switch {
	case prev == event.MembershipBan:
		return "unban"
	case sender != user:
		return "kick"
	}
	return "leave"
}

// PrevMembership is the membership a member event replaced (leave when there was none).
func PrevMembership(evt *event.Event) event.Membership {
	if prev, ok := PrevContent(evt).(*event.MemberEventContent); ok {
		return prev.Membership
	}
	return event.MembershipLeave
}

// PrevContent returns the parsed content the state event replaced, or nil (also when it does
// not parse).
func PrevContent(evt *event.Event) any {
	prev := evt.Unsigned.PrevContent
	if prev == nil {
		return nil
	}
	if err := prev.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrContentAlreadyParsed) {
		// ParseRaw keeps what it read before the error: the next look would take it as parsed.
		prev.Parsed = nil
		return nil
	}
	return prev.Parsed
}

// LevelChanges lists the users whose power level a power levels event changed, by user ID.
func LevelChanges(evt *event.Event) []wire.LevelChange {
	now := evt.Content.AsPowerLevels()
	before, ok := PrevContent(evt).(*event.PowerLevelsEventContent)
	if !ok {
		before = &event.PowerLevelsEventContent{}
	}
	users := slices.Sorted(maps.Keys(now.Users))
	for u := range before.Users {
		if _, ok := now.Users[u]; !ok {
			users = append(users, u)
		}
	}
	var out []wire.LevelChange
	for _, u := range users {
		if from, to := before.GetUserLevel(u), now.GetUserLevel(u); from != to {
			out = append(out, wire.LevelChange{User: u, From: from, To: to})
		}
	}
	return out
}

// MembershipChanged tells a join, leave, invite or ban from a profile change.
func MembershipChanged(evt *event.Event) bool {
	prev, ok := PrevContent(evt).(*event.MemberEventContent)
	return !ok || prev.Membership != evt.Content.AsMember().Membership
}
