// Package actionstest has a fake homeserver for unit tests of the parts that run actions.
package actionstest

import (
	"context"
	"fmt"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"sync"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
	mxmedia "github.com/matrix2mqtt/matrix2mqtt/matrix/media"
)

// Matrix plays the homeserver and the sync loop: each send or redaction takes the next
// scripted error (nil = success). Methods not overridden panic (the embedded interface is nil).
type Matrix struct {
	actions.Matrix

	Mu sync.Mutex
	// Errs are the results of the next calls, in order.
	Errs []error
	// Calls counts sends, redactions and room operations.
	Calls int
	// Sent holds the transaction IDs of successful sends, in order; Contents their contents.
	Sent     []string
	Contents []any
	Redacted []id.EventID
	Typings  []bool
	Joined   []string
	// Echoes is what sync echoed (transaction ID → event).
	Echoes map[string]id.EventID
	// Sync, when set, is what NextSync returns (a test closes it to hand over a sync);
	// otherwise the next sync has always come already.
	Sync        chan struct{}
	HealthyFrom time.Time
	Unhealthy   bool // sync is down
	RoomList    []wire.Room
	// Aliases are the rooms that Resolve gives for these targets; any other target is a room ID.
	Aliases map[string]id.RoomID
	// ResolveErrs are what Resolve fails with for these targets.
	ResolveErrs map[string]error
	Admin       Admin
	// MemberList are the joined members that Members returns.
	MemberList []id.UserID
	// Uploads holds the uploaded files, in order; the mxc of the n-th is mxc://fake/n.
	Uploads [][]byte
	// Encrypted are the rooms IsEncrypted reports; their uploads come back with a `file`.
	Encrypted map[id.RoomID]bool
}

func (f *Matrix) next() error {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	return f.nextLocked()
}

// NextSync returns the channel closed by the next sync.
func (f *Matrix) NextSync() <-chan struct{} {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if f.Sync != nil {
		return f.Sync
	}
	c := make(chan struct{})
	close(c)
	return c
}

// Healthy tells whether sync works.
func (f *Matrix) Healthy() bool {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	return !f.Unhealthy
}

// HealthySince is when sync last came back.
func (f *Matrix) HealthySince() time.Time {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	return f.HealthyFrom
}

// SentWithTxn looks up an echo.
func (f *Matrix) SentWithTxn(_ context.Context, txnID string) (id.EventID, bool) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	evtID, ok := f.Echoes[txnID]
	return evtID, ok
}

// Resolve gives the room of an alias in Aliases, and takes any other target for a room ID.
func (f *Matrix) Resolve(_ context.Context, target string) (id.RoomID, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.ResolveErrs[target]; err != nil {
		return "", err
	}
	if roomID, ok := f.Aliases[target]; ok {
		return roomID, nil
	}
	return id.RoomID(target), nil
}

// Send records the send; the event ID is "$" + the transaction ID.
func (f *Matrix) Send(_ context.Context, _ id.RoomID, _ event.Type, content any, txnID string) (id.EventID, error) {
	if err := f.next(); err != nil {
		return "", err
	}
	f.Mu.Lock()
	defer f.Mu.Unlock()
	f.Sent = append(f.Sent, txnID)
	f.Contents = append(f.Contents, content)
	return id.EventID("$" + txnID), nil
}

// Upload records the file; for an Encrypted room it answers with a `file` instead of a `url`.
func (f *Matrix) Upload(_ context.Context, roomID id.RoomID, data []byte, _, _ string) (mxmedia.Ref, error) {
	if err := f.next(); err != nil {
		return mxmedia.Ref{}, err
	}
	f.Mu.Lock()
	defer f.Mu.Unlock()
	f.Uploads = append(f.Uploads, data)
	uri := id.ContentURIString(fmt.Sprintf("mxc://fake/%d", len(f.Uploads)-1))
	if f.Encrypted[roomID] {
		return mxmedia.Ref{File: &event.EncryptedFileInfo{URL: uri}}, nil
	}
	return mxmedia.Ref{URL: uri}, nil
}

// IsEncrypted reports the Encrypted rooms.
func (f *Matrix) IsEncrypted(_ context.Context, roomID id.RoomID) (bool, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	return f.Encrypted[roomID], nil
}

// Redact records the redaction.
func (f *Matrix) Redact(_ context.Context, _ id.RoomID, eventID id.EventID, _, _ string) (id.EventID, error) {
	if err := f.next(); err != nil {
		return "", err
	}
	f.Mu.Lock()
	defer f.Mu.Unlock()
	f.Redacted = append(f.Redacted, eventID)
	return "$redaction", nil
}

// Typing records the typing state.
func (f *Matrix) Typing(_ context.Context, _ id.RoomID, typing bool, _ time.Duration) error {
	if err := f.next(); err != nil {
		return err
	}
	f.Mu.Lock()
	defer f.Mu.Unlock()
	f.Typings = append(f.Typings, typing)
	return nil
}

// Join records the join; the room ID is the target.
func (f *Matrix) Join(_ context.Context, target string) (id.RoomID, error) {
	if err := f.next(); err != nil {
		return "", err
	}
	f.Mu.Lock()
	defer f.Mu.Unlock()
	f.Joined = append(f.Joined, target)
	return id.RoomID(target), nil
}

// Rooms returns RoomList.
func (f *Matrix) Rooms(context.Context) ([]wire.Room, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	return f.RoomList, f.nextLocked()
}

func (f *Matrix) nextLocked() error {
	f.Calls++
	if len(f.Errs) == 0 {
		return nil
	}
	err := f.Errs[0]
	f.Errs = f.Errs[1:]
	return err
}

// Members returns MemberList as joined members.
func (f *Matrix) Members(context.Context, id.RoomID, event.Membership) ([]wire.Member, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	out := make([]wire.Member, len(f.MemberList))
	for i, u := range f.MemberList {
		out[i] = wire.Member{UserID: u, Membership: string(event.MembershipJoin)}
	}
	return out, f.nextLocked()
}

// Admin is the fake state of room administration: the bot's user ID, the rooms' power levels
// (a room without an entry is one the bot is not in) and the changes made.
type Admin struct {
	Bot     id.UserID
	Power   map[id.RoomID]*event.PowerLevelsEventContent
	Changes []string // "kick @u:hs", "state m.room.name"
}

// UserID is the bot's user ID.
func (f *Matrix) UserID() id.UserID { return f.Admin.Bot }

// ChangeMembership records the change.
func (f *Matrix) ChangeMembership(_ context.Context, _ id.RoomID, change matrix.MembershipChange, user id.UserID, _ string) error {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	f.Admin.Changes = append(f.Admin.Changes, string(change)+" "+user.String())
	return f.nextLocked()
}

// PowerLevels returns the room's power levels; ErrUnknownTarget when it has none.
func (f *Matrix) PowerLevels(_ context.Context, roomID id.RoomID) (*event.PowerLevelsEventContent, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	pl, ok := f.Admin.Power[roomID]
	if !ok {
		return nil, matrix.ErrUnknownTarget
	}
	return pl.Clone(), f.nextLocked()
}

// SetState records the state event; new power levels replace the room's.
func (f *Matrix) SetState(_ context.Context, roomID id.RoomID, evtType event.Type, _ string, content any) (id.EventID, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.nextLocked(); err != nil {
		return "", err
	}
	f.Admin.Changes = append(f.Admin.Changes, "state "+evtType.Type)
	if pl, ok := content.(*event.PowerLevelsEventContent); ok {
		f.Admin.Power[roomID] = pl
	}
	return "$state", nil
}

// CheckUser knows every user.
func (f *Matrix) CheckUser(context.Context, id.UserID) error { return nil }
