package actions

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// LiveMessages lists the actions of live messages.
var LiveMessages = []Spec{
	{Name: "clear_tag", Help: "redacts the message of a tag and forgets the tag", New: func() Request { return &ClearTag{} }},
}

// EditLast is the value of `edit` that edits the bot's last message in the room.
const EditLast = "last"

// maxTagLen bounds a tag, in bytes.
const maxTagLen = 64

// lastTag names the bridge's last message in a room (TagStore.Tag).
const lastTag = ""

// TagStore remembers the message of each tag, and finds the bot's last message in a room
// (recorded with Delivery.RecordSent).
type TagStore interface {
	// Tag returns the message of tag in roomID; the empty tag is the last editable message sent
	// there (a text of send without options).
	Tag(ctx context.Context, roomID id.RoomID, tag string) (store.Tagged, bool, error)
	SetTag(ctx context.Context, roomID id.RoomID, tag string, evtID id.EventID, sentAt time.Time) error
	ForgetTag(ctx context.Context, roomID id.RoomID, tag string, evtID id.EventID) error
}

// LiveConfig configures tags and priorities.
type LiveConfig struct {
	// TagMaxAge: a send with a tag whose message is older than this sends a new message.
	TagMaxAge time.Duration `env:"TAG_MAX_AGE" envDefault:"24h"`
	// Priorities are what each `priority` does: a list of effects (notice, members, room).
	PriorityLow    []string `env:"PRIORITY_LOW" envDefault:"notice"`
	PriorityNormal []string `env:"PRIORITY_NORMAL"`
	PriorityHigh   []string `env:"PRIORITY_HIGH" envDefault:"members"`
	PriorityUrgent []string `env:"PRIORITY_URGENT" envDefault:"room"`
}

// The effects a priority can have.
const (
	// EffectNotice sends a text message as m.notice (clients notify less eagerly).
	EffectNotice = "notice"
	// EffectMembers mentions the room's members (options_from, when set) in m.mentions.
	EffectMembers = "members"
	// EffectRoom mentions @room.
	EffectRoom = "room"
)

// Validate reports the first setting that cannot work.
func (c LiveConfig) Validate() error {
	if c.TagMaxAge < time.Second {
		return errors.New("TAG_MAX_AGE: must be at least 1s")
	}
	for name, effects := range map[string][]string{"PRIORITY_LOW": c.PriorityLow, "PRIORITY_NORMAL": c.PriorityNormal,
		"PRIORITY_HIGH": c.PriorityHigh, "PRIORITY_URGENT": c.PriorityUrgent} {
		for _, e := range effects {
			if e != EffectNotice && e != EffectMembers && e != EffectRoom {
				return fmt.Errorf("%s: %q is not one of notice, members, room", name, e)
			}
		}
	}
	return nil
}

// effects returns what priority p does.
func (c LiveConfig) effects(p string) []string {
	switch p {
	case "low":
		return c.PriorityLow
	case "high":
		return c.PriorityHigh
	case "urgent":
		return c.PriorityUrgent
	}
	return c.PriorityNormal
}

// Live are the fields of `send` that keep a message current and say how loud it is.
type Live struct {
	// Tag names a live message: a later send with the same tag to the same room edits it.
	Tag      string `json:"tag,omitempty"`
	Priority string `json:"priority,omitempty"`
}

func (l *Live) validate() *wire.Error {
	if err := checkTag(l.Tag, false); err != nil {
		return err
	}
	switch l.Priority {
	case "", "low", "normal", "high", "urgent":
	default:
		return wire.Errorf(wire.CodeInvalidRequest, "field 'priority' must be low, normal, high or urgent, not %q", l.Priority)
	}
	return nil
}

// checkTag checks a tag: letters, digits, '_', '-', '.' and ':', at most 64 bytes.
func checkTag(tag string, required bool) *wire.Error {
	if tag == "" {
		if required {
			return wire.Errorf(wire.CodeInvalidRequest, "field 'tag' is required")
		}
		return nil
	}
	if len(tag) > maxTagLen {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'tag' is longer than %d bytes", maxTagLen)
	}
	for _, r := range tag {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '_' && r != '-' && r != '.' && r != ':' {
			return wire.Errorf(wire.CodeInvalidRequest, "field 'tag' may hold letters, digits, '_', '-', '.' and ':' only, not %q", r)
		}
	}
	return nil
}

// LiveResult is the data of a send: an edit names the message it replaced.
type LiveResult struct {
	SendResult
	EditOf id.EventID `json:"edit_of,omitempty"`
}

// liveProgress is what a send decided before its first attempt: the message it edits (none:
// a new message). Kept so that a retry does not decide again after the tag moved.
type liveProgress struct {
	EditOf id.EventID `json:"edit_of,omitempty"`
}

// editOf decides which message a send replaces: `edit`, the bot's last message for
// `"edit": "last"`, the tag's message while it is younger than TAG_MAX_AGE, or none.
func (r *Send) editOf(ctx context.Context, d *Delivery, roomID id.RoomID) (id.EventID, error) {
	if r.Edit != EditLast && r.Tag == "" {
		return r.Edit, nil // nothing to look up, nothing to keep
	}
	var p liveProgress
	if ok, err := d.Progress.Load(&p); err != nil || ok {
		return p.EditOf, err
	}
	switch {
	case r.Edit == EditLast:
		last, ok, err := d.Tags.Tag(ctx, roomID, lastTag)
		if err != nil {
			return "", err
		}
		if !ok {
			return "", wire.Errorf(wire.CodeInvalidRequest, "'edit': \"last\": the bridge has sent no message to this room in the last 7 days")
		}
		p.EditOf = last.EventID
	default:
		tagged, ok, err := d.Tags.Tag(ctx, roomID, r.Tag)
		if err != nil {
			return "", err
		}
		if ok && d.Now.Sub(tagged.SentAt) < d.Live.TagMaxAge {
			p.EditOf = tagged.EventID
		}
	}
	return p.EditOf, d.Progress.Save(ctx, p)
}

// sendLive sends the message or the edit decided by editOf, with the priority's effects, and
// remembers a new message as the room's last one and as its tag's.
func (r *Send) sendLive(ctx context.Context, d *Delivery) (any, error) {
	roomID, err := d.Room(ctx)
	if err != nil {
		return nil, err
	}
	editOf, err := r.editOf(ctx, d, roomID)
	if err != nil {
		return nil, err
	}
	content, err := r.loud(ctx, d, roomID)
	if err != nil {
		return nil, err
	}
	if editOf != "" && editOf != r.Edit { // an explicit edit is in the content already
		content.RelatesTo = nil
		content.SetEdit(editOf)
	}
	evtID, err := d.Matrix.Send(ctx, roomID, event.EventMessage, content, d.TxnID)
	if err != nil {
		return nil, err
	}
	if editOf == "" {
		if err := r.remember(ctx, d, roomID, evtID, true); err != nil {
			return nil, err
		}
	}
	r.Timing.scheduleRedaction(d, roomID, evtID)
	return LiveResult{SendResult: SendResult{EventID: evtID, RoomID: roomID}, EditOf: editOf}, nil
}

// remember keeps a new message as sent by its request (when editable, also as the room's last
// one for "edit": "last") and, with a tag, as the tag's.
func (r *Send) remember(ctx context.Context, d *Delivery, roomID id.RoomID, evtID id.EventID, editable bool) error {
	d.RecordSent(roomID, evtID, r.ID, editable)
	if r.Tag == "" {
		return nil
	}
	return d.Tags.SetTag(ctx, roomID, r.Tag, evtID, d.Now)
}

// loud is the message content with the effects of its priority.
func (r *Send) loud(ctx context.Context, d *Delivery, roomID id.RoomID) (*event.MessageEventContent, error) {
	content := r.Content()
	for _, effect := range d.Live.effects(r.Priority) {
		switch effect {
		case EffectNotice:
			if content.MsgType == event.MsgText {
				content.MsgType = event.MsgNotice
			}
		case EffectRoom:
			content.Mentions.Room = true
		case EffectMembers:
			users := r.allowed()
			if len(users) == 0 {
				members, err := d.Matrix.Members(ctx, roomID, event.MembershipJoin)
				if err != nil {
					return nil, err
				}
				bot := d.Matrix.UserID()
				for _, m := range members {
					if m.UserID != bot {
						users = append(users, m.UserID)
					}
				}
			}
			for _, u := range users {
				if !slices.Contains(content.Mentions.UserIDs, u) {
					content.Mentions.UserIDs = append(content.Mentions.UserIDs, u)
				}
			}
		}
	}
	return content, nil
}

// ClearTag is the `clear_tag` action.
type ClearTag struct {
	Common
	To
	Tag    string `json:"tag"`
	Reason string `json:"reason,omitempty"`
}

// Validate checks the tag.
func (r *ClearTag) Validate(t Targets) *wire.Error {
	if err := r.To.Check(t); err != nil {
		return err
	}
	return checkTag(r.Tag, true)
}

// ClearResult is the data of clear_tag: the redacted message, if the tag had one.
type ClearResult struct {
	RoomID   id.RoomID  `json:"room_id"`
	Redacted id.EventID `json:"redacted,omitempty"`
	Cleared  bool       `json:"cleared"`
}

// clearProgress is the message clear_tag decided to redact.
type clearProgress struct {
	EventID id.EventID `json:"event_id,omitempty"`
	Decided bool       `json:"decided"`
}

// Deliver redacts the tag's message and forgets the tag; a tag without a message is answered
// ok with cleared false.
func (r *ClearTag) Deliver(ctx context.Context, d *Delivery) (any, error) {
	roomID, err := d.Room(ctx)
	if err != nil {
		return nil, err
	}
	var p clearProgress
	if _, err := d.Progress.Load(&p); err != nil {
		return nil, err
	}
	if !p.Decided {
		tagged, _, err := d.Tags.Tag(ctx, roomID, r.Tag)
		if err != nil {
			return nil, err
		}
		p = clearProgress{EventID: tagged.EventID, Decided: true}
		if err := d.Progress.Save(ctx, p); err != nil {
			return nil, err
		}
	}
	if p.EventID == "" {
		return ClearResult{RoomID: roomID}, nil
	}
	if _, err := d.Matrix.Redact(ctx, roomID, p.EventID, r.Reason, d.TxnID); err != nil {
		return nil, err
	}
	if err := d.Tags.ForgetTag(ctx, roomID, r.Tag, p.EventID); err != nil {
		return nil, err
	}
	return ClearResult{RoomID: roomID, Redacted: p.EventID, Cleared: true}, nil
}
