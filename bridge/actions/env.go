package actions

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/media"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/roomconf"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
	mxmedia "github.com/matrix2mqtt/matrix2mqtt/matrix/media"
)

// Matrix is what actions need from the Matrix client.
type Matrix interface {
	Resolve(ctx context.Context, target string) (id.RoomID, error)
	Send(ctx context.Context, roomID id.RoomID, evtType event.Type, content any, txnID string) (id.EventID, error)
	Redact(ctx context.Context, roomID id.RoomID, eventID id.EventID, reason, txnID string) (id.EventID, error)
	Typing(ctx context.Context, roomID id.RoomID, typing bool, timeout time.Duration) error
	ReadReceipt(ctx context.Context, roomID id.RoomID, eventID id.EventID) error
	Join(ctx context.Context, roomIDOrAlias string) (id.RoomID, error)
	Leave(ctx context.Context, roomID id.RoomID) error
	EnsureDM(ctx context.Context, user id.UserID) (id.RoomID, bool, error)
	EnsureEncrypted(ctx context.Context, roomID id.RoomID) (bool, error)
	GetEvent(ctx context.Context, roomID id.RoomID, eventID id.EventID) (matrix.Event, error)
	Rooms(ctx context.Context) ([]wire.Room, error)

	// Room administration (admin.go).
	UserID() id.UserID
	ChangeMembership(ctx context.Context, roomID id.RoomID, change matrix.MembershipChange, user id.UserID, reason string) error
	PowerLevels(ctx context.Context, roomID id.RoomID) (*event.PowerLevelsEventContent, error)
	SetState(ctx context.Context, roomID id.RoomID, evtType event.Type, stateKey string, content any) (id.EventID, error)
	Members(ctx context.Context, roomID id.RoomID, membership event.Membership) ([]wire.Member, error)
	CheckUser(ctx context.Context, user id.UserID) error
	CreateRoom(ctx context.Context, req *mautrix.ReqCreateRoom, encrypted *bool) (id.RoomID, error)

	// Media (media.go).
	Upload(ctx context.Context, roomID id.RoomID, data []byte, mimetype, filename string) (mxmedia.Ref, error)
	Download(ctx context.Context, uri id.ContentURIString, file *attachment.EncryptedFile, maxBytes int64) ([]byte, error)
	// IsEncrypted tells whether the bot knows the room to be encrypted (broadcast's uploads).
	IsEncrypted(ctx context.Context, roomID id.RoomID) (bool, error)
}

// OutboxControl is what the outbox actions need from the outbox.
type OutboxControl interface {
	// Flush makes every entry that waits to retry try again now.
	Flush()
	Stats() wire.Stats
	// Cancel answers the scheduled or pending requests with this id `expired` and removes them;
	// it returns how many, or an error when there is none or one is being delivered.
	Cancel(ctx context.Context, requestID string) (int, error)
}

// Env is what an immediate action runs against.
type Env struct {
	Matrix  Matrix
	Targets Targets
	Outbox  OutboxControl
	// Templates are the create_room templates of ROOM_TEMPLATES_FILE.
	Templates roomconf.Templates
	// Keys remembers the friendly names that create_room gives.
	Keys KeyStore
	// Options remembers the messages sent with options.
	Options OptionStore
	// Tags remembers the bot's messages by tag and its last message in each room.
	Tags TagStore
	// Live says what tags and priorities do.
	Live LiveConfig
	// Polls remembers the polls the bridge started and their votes.
	Polls PollStore
	// SentMessages records the messages of a request that is not finished yet (a broadcast's
	// rooms).
	SentMessages SentRecorder
	// Media is where files come from; nil when not set up.
	Media *media.Media
	// Publisher publishes what actions deliver to MQTT besides their response (downloaded media
	// messages, the tally of an ended poll) on Topics.
	Publisher Publisher
	// Topics are the bridge's MQTT topics.
	Topics wire.Topics
}

// SentRecorder records sent messages at once, for read receipts; the outbox records the others
// when their request is finished.
type SentRecorder interface {
	RecordSent(ctx context.Context, sent []store.Sent) error
}

// Publisher publishes on MQTT and waits for the broker's acknowledgement.
type Publisher interface {
	Publish(ctx context.Context, topic string, retained bool, payload []byte) error
}

// Resolve turns an expanded target into a room ID (the room that replaced it, when it was
// upgraded) and remembers it for the topic keys.
func (env *Env) Resolve(ctx context.Context, target string) (id.RoomID, error) {
	roomID, err := env.Matrix.Resolve(ctx, target)
	if err != nil {
		return "", err
	}
	roomID = env.Targets.Follow(roomID)
	env.Targets.Remember(target, roomID)
	return roomID, nil
}

// Progress keeps what a durable request's steps have done, across retries and restarts.
type Progress interface {
	// Load decodes the saved progress into v; it reports false when nothing was saved.
	Load(v any) (bool, error)
	// Save records v before the next step runs.
	Save(ctx context.Context, v any) error
}

// FollowUp is a durable request that a delivered one schedules (a redaction after some time).
// It is committed together with the end of the request that scheduled it.
type FollowUp struct {
	Action    string
	Lane      string
	Request   Durable
	NotBefore time.Time
}

// Delivery is what a durable request is delivered with. Its Matrix sends with the entry's
// transaction IDs and does not send again what sync shows was sent before a crash.
type Delivery struct {
	Env
	// Target is the request's lane: its expanded target.
	Target string
	// TxnID is the entry's transaction ID, the same on every attempt.
	TxnID string
	// Now is when this attempt started.
	Now      time.Time
	Progress Progress

	followUps []FollowUp
	sent      []store.Sent
}

// Room resolves the delivery's target.
func (d *Delivery) Room(ctx context.Context) (id.RoomID, error) {
	return d.Resolve(ctx, d.Target)
}

// StepTxnID is the transaction ID of step n of a request made of several events; step 0 is
// TxnID itself.
func (d *Delivery) StepTxnID(n int) string {
	if n == 0 {
		return d.TxnID
	}
	return fmt.Sprintf("%s.%d", d.TxnID, n)
}

// Schedule adds a follow-up, committed once this request is done.
func (d *Delivery) Schedule(f FollowUp) { d.followUps = append(d.followUps, f) }

// FollowUps returns the scheduled follow-ups.
func (d *Delivery) FollowUps() []FollowUp { return d.followUps }

// RecordSent keeps a message the request sent, for read receipts and, when editable (a text
// message of send without options), as the room's last message for `"edit": "last"`; it is recorded in the
// transaction that finishes the request.
func (d *Delivery) RecordSent(roomID id.RoomID, evtID id.EventID, requestID string, editable bool) {
	d.sent = append(d.sent, store.Sent{RoomID: roomID, EventID: evtID, RequestID: requestID, SentAt: d.Now, Editable: editable})
}

// RecordSentNow records a message at once, for a request that sends many before it is finished.
// It is a head start for reads: the request still keeps the message with RecordSent, which the
// outbox records when the request is finished, so a failure here is only logged.
func (d *Delivery) RecordSentNow(ctx context.Context, roomID id.RoomID, evtID id.EventID, requestID string) {
	if d.SentMessages == nil {
		return
	}
	if err := d.SentMessages.RecordSent(ctx, []store.Sent{{RoomID: roomID, EventID: evtID, RequestID: requestID, SentAt: d.Now}}); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Stringer("event_id", evtID).Msg("Failed to record a sent message early; it is recorded when its request is done")
	}
}

// Sent returns the messages kept by RecordSent.
func (d *Delivery) Sent() []store.Sent { return d.sent }
