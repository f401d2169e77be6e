package matrix

import (
	"context"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"

	"github.com/matrix2mqtt/matrix2mqtt/matrix/e2ee"
)

// e2eeDisabled is the status when E2EE is off.
var e2eeDisabled = wire.E2EEStatus{Status: "disabled"}

// cryptoOptions are what package e2ee needs from the client.
func (c *Client) cryptoOptions() e2ee.Options {
	return e2ee.Options{
		Client:   c.cli,
		DB:       c.rootDB,
		Password: c.cfg.Password,
		DataDir:  c.opts.DataDir,
		Notify: func(ctx context.Context, noticeType, message string) {
			c.notify(ctx, wire.Notice{Type: noticeType, Message: message})
		},
		Undecryptable: c.undecryptable,
	}
}

// undecryptable tells the operator about an event that could not be decrypted, and takes it off
// the list of events the sync being processed leaves waiting for keys.
func (c *Client) undecryptable(ctx context.Context, evt *event.Event, err error) {
	if c.opts.OnUndecryptable != nil {
		c.opts.OnUndecryptable(errors.Is(err, crypto.ErrGroupSessionWithheld))
	}
	c.notify(ctx, wire.Notice{
		Type: "decryption_failed", RoomID: evt.RoomID, Sender: evt.Sender,
		Message: fmt.Sprintf("could not decrypt %s: %v", evt.ID, err),
	})
	// It fails during the sync that brought it (keys withheld), or after waiting for its keys.
	c.collectMu.Lock()
	if c.collect != nil {
		delete(c.collect.undecrypted, evt.ID)
	}
	c.collectMu.Unlock()
}

// E2EEStatus reports the encryption state of the bot's device.
func (c *Client) E2EEStatus(ctx context.Context) wire.E2EEStatus {
	if c.crypto == nil {
		return e2eeDisabled
	}
	return c.crypto.Status(ctx)
}

// CheckE2EE logs in with the stored session and reports the encryption state without changing
// anything on the account, for `matrix2mqtt e2ee status`.
func (c *Client) CheckE2EE(ctx context.Context) (wire.E2EEStatus, error) {
	if !c.cfg.E2EE.Enabled {
		return e2eeDisabled, nil
	}
	if err := c.Login(ctx); err != nil {
		return wire.E2EEStatus{}, err
	}
	return e2ee.Check(ctx, c.cfg.E2EE, c.cryptoOptions())
}
