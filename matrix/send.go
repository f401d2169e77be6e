package matrix

import (
	"context"
	"errors"
	"fmt"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Resolve turns a target (room ID, alias or user ID) into a room ID. A user ID resolves to the
// DM with that user, created when there is none.
func (c *Client) Resolve(ctx context.Context, target string) (id.RoomID, error) {
	if target == "" {
		return "", fmt.Errorf("%w: empty", ErrUnknownTarget)
	}
	switch target[0] {
	case '!':
		return id.RoomID(target), nil
	case '#':
		return c.rooms.resolveAlias(ctx, id.RoomAlias(target))
	case '@':
		roomID, _, err := c.EnsureDM(ctx, id.UserID(target))
		return roomID, err
	}
	return "", fmt.Errorf("%w: %q is not a room ID, alias or user ID", ErrUnknownTarget, target)
}

// EnsureDM returns the direct chat with user, creating it when there is none; created tells
// which.
func (c *Client) EnsureDM(ctx context.Context, user id.UserID) (roomID id.RoomID, created bool, err error) {
	err = c.retryAuth(ctx, func() error {
		roomID, created, err = c.rooms.ensureDM(ctx, user, c.crypto != nil)
		return err
	})
	if created {
		c.markRoomsChanged()
	}
	return roomID, created, err
}

// ErrUnsupportedEvent means an event is not a message, reaction or redaction.
var ErrUnsupportedEvent = errors.New("not a message, reaction or redaction")

// ErrEncryptionUnavailable means a message was meant for an encrypted room but the bridge
// cannot encrypt.
var ErrEncryptionUnavailable = errors.New("the room is encrypted and end-to-end encryption is not enabled in the bridge, or broken (see e2ee in bridge/info)")

// Send sends a message-like event with a fixed transaction ID, so that a retry is deduplicated.
// It refuses to send plaintext into an encrypted room.
func (c *Client) Send(ctx context.Context, roomID id.RoomID, evtType event.Type, content any, txnID string) (id.EventID, error) {
	if c.cli.Crypto == nil && evtType != event.EventReaction {
		encrypted, err := c.roomEncrypted(ctx, roomID)
		if err != nil {
			return "", fmt.Errorf("failed to send to %s: %w", roomID, err)
		}
		if encrypted {
			return "", fmt.Errorf("failed to send to %s: %w", roomID, ErrEncryptionUnavailable)
		}
	}
	var resp *mautrix.RespSendEvent
	err := c.retryAuth(ctx, func() (err error) {
		resp, err = c.cli.SendMessageEvent(ctx, roomID, evtType, content, mautrix.ReqSendEvent{TransactionID: txnID})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("failed to send %s to %s: %w", evtType.Type, roomID, err)
	}
	return resp.EventID, nil
}

// Redact redacts eventID with a fixed transaction ID.
func (c *Client) Redact(ctx context.Context, roomID id.RoomID, eventID id.EventID, reason, txnID string) (id.EventID, error) {
	var resp *mautrix.RespSendEvent
	err := c.retryAuth(ctx, func() (err error) {
		resp, err = c.cli.RedactEvent(ctx, roomID, eventID, mautrix.ReqRedact{Reason: reason, TxnID: txnID})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("failed to redact %s in %s: %w", eventID, roomID, err)
	}
	return resp.EventID, nil
}

// Typing sets or clears the typing notification in roomID.
func (c *Client) Typing(ctx context.Context, roomID id.RoomID, typing bool, timeout time.Duration) error {
	return c.retryAuth(ctx, func() error {
		_, err := c.cli.UserTyping(ctx, roomID, typing, timeout)
		if err != nil {
			return fmt.Errorf("failed to set typing in %s: %w", roomID, err)
		}
		return nil
	})
}

// ReadReceipt marks eventID as read in roomID.
func (c *Client) ReadReceipt(ctx context.Context, roomID id.RoomID, eventID id.EventID) error {
	return c.retryAuth(ctx, func() error {
		if err := c.cli.SendReceipt(ctx, roomID, eventID, event.ReceiptTypeRead, nil); err != nil {
			return fmt.Errorf("failed to send read receipt in %s: %w", roomID, err)
		}
		return nil
	})
}

// Join joins a room by ID or alias and returns its ID.
func (c *Client) Join(ctx context.Context, roomIDOrAlias string) (id.RoomID, error) {
	var resp *mautrix.RespJoinRoom
	err := c.retryAuth(ctx, func() (err error) {
		resp, err = c.cli.JoinRoom(ctx, roomIDOrAlias, nil)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("failed to join %s: %w", roomIDOrAlias, err)
	}
	if c.rooms.joined(ctx, resp.RoomID) {
		c.markRoomsChanged()
	}
	return resp.RoomID, nil
}

// Leave leaves roomID.
func (c *Client) Leave(ctx context.Context, roomID id.RoomID) error {
	err := c.retryAuth(ctx, func() error {
		_, err := c.cli.LeaveRoom(ctx, roomID)
		return err
	})
	if err != nil {
		return fmt.Errorf("failed to leave %s: %w", roomID, err)
	}
	if c.rooms.left(ctx, roomID) {
		c.markRoomsChanged()
	}
	return nil
}

// Rooms lists the joined rooms.
func (c *Client) Rooms(ctx context.Context) ([]wire.Room, error) {
	return c.rooms.list(ctx)
}

// retryAuth runs fn, and once more after logging in again if the token was rejected.
func (c *Client) retryAuth(ctx context.Context, fn func() error) error {
	err := fn()
	if err != nil && c.recoverAuth(ctx, err) {
		err = fn()
	}
	return err
}

// NextSync returns a channel that is closed once the next sync response (one requested after
// this call) was handed over: from then on SentWithTxn knows what that sync echoed.
func (c *Client) NextSync() <-chan struct{} {
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	return c.nextSync
}

// SentWithTxn returns the event that sync echoed for a transaction ID this device sent, in this
// run or an earlier one. After a crash it tells whether a request that was in flight reached the
// homeserver, which homeservers that forget transaction IDs of interrupted requests (Dendrite)
// would otherwise duplicate.
func (c *Client) SentWithTxn(ctx context.Context, txnID string) (id.EventID, bool) {
	return c.echoes.Get(ctx, txnID)
}

// DirectRoom returns the existing DM with user, if there is one the bot is in.
func (c *Client) DirectRoom(ctx context.Context, user id.UserID) (id.RoomID, bool) {
	return c.rooms.existingDM(ctx, user)
}

// EnsureEncrypted turns encryption on in roomID; it reports whether it was off. Encryption
// cannot be turned off again in Matrix.
func (c *Client) EnsureEncrypted(ctx context.Context, roomID id.RoomID) (bool, error) {
	if encrypted, _ := c.state.IsEncrypted(ctx, roomID); encrypted {
		return false, nil
	}
	var current event.EncryptionEventContent
	err := c.retryAuth(ctx, func() error { return c.cli.StateEvent(ctx, roomID, event.StateEncryption, "", &current) })
	if err == nil && current.Algorithm != "" {
		return false, nil
	}
	content := &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}
	err = c.retryAuth(ctx, func() error {
		_, err := c.cli.SendStateEvent(ctx, roomID, event.StateEncryption, "", content)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("failed to turn on encryption in %s: %w", roomID, err)
	}
	return true, nil
}

// GetEvent fetches one event, decrypts it if needed, and returns it normalised like an inbound
// event (also when the bot sent it).
func (c *Client) GetEvent(ctx context.Context, roomID id.RoomID, eventID id.EventID) (Event, error) {
	var evt *event.Event
	err := c.retryAuth(ctx, func() (err error) {
		evt, err = c.cli.GetEvent(ctx, roomID, eventID)
		return err
	})
	if err != nil {
		return Event{}, fmt.Errorf("failed to get event %s: %w", eventID, err)
	}
	evt.RoomID = roomID
	if err := evt.Content.ParseRaw(evt.Type); err != nil && evt.Type != event.EventEncrypted && !errors.Is(err, event.ErrUnsupportedContentType) {
		return Event{}, fmt.Errorf("failed to parse event %s: %w", eventID, err)
	}
	if evt.Type == event.EventEncrypted {
		if c.crypto == nil {
			return Event{}, fmt.Errorf("event %s: %w", eventID, ErrEncryptionUnavailable)
		}
		_ = evt.Content.ParseRaw(evt.Type)
		decrypted, err := c.crypto.Decrypt(ctx, evt)
		if err != nil {
			return Event{}, fmt.Errorf("failed to decrypt event %s: %w", eventID, err)
		}
		evt = decrypted
	}
	ev, ok := normalise(evt)
	if !ok {
		return Event{}, fmt.Errorf("%w: %s is a %s", ErrUnsupportedEvent, eventID, evt.Type.Type)
	}
	c.fillNames(ctx, ev)
	return ev, nil
}

// roomEncrypted tells whether roomID is encrypted, for a client that cannot encrypt. The state
// store knows only what sync brought so far: after a start on an empty DATA_DIR a send can come
// before the room's state, so the first time a room is asked about the homeserver is asked too.
// Later changes come through sync into the state store.
func (c *Client) roomEncrypted(ctx context.Context, roomID id.RoomID) (bool, error) {
	if encrypted, err := c.state.IsEncrypted(ctx, roomID); err != nil || encrypted {
		return encrypted, err
	}
	if _, checked := c.encryptionChecked.Load(roomID); checked {
		return false, nil
	}
	var content event.EncryptionEventContent
	err := c.retryAuth(ctx, func() error { return c.cli.StateEvent(ctx, roomID, event.StateEncryption, "", &content) })
	switch {
	case errors.Is(err, mautrix.MNotFound):
	case err != nil:
		return false, fmt.Errorf("failed to read the encryption state: %w", err)
	case content.Algorithm != "":
		if err := c.state.SetEncryptionEvent(ctx, roomID, &content); err != nil {
			return false, fmt.Errorf("failed to record the encryption state: %w", err)
		}
		return true, nil
	}
	c.encryptionChecked.Store(roomID, true)
	return false, nil
}
