package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// recipient is a user in an encrypted room whose devices have real keys (mautrix crypto with
// goolm), so that the bridge encrypts for each of them.
type recipient struct {
	acc     *account
	devices []*cryptohelper.CryptoHelper
	clients []*mautrix.Client
}

func (b *bench) newRecipient(ctx context.Context, role string, devices int) (*recipient, error) {
	acc, err := b.account(ctx, role)
	if err != nil {
		return nil, err
	}
	r := &recipient{acc: acc}
	dir := filepath.Join(b.dir, "devices-"+role)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	for i := range devices {
		cli, err := mautrix.NewClient(b.hs, id.UserID(acc.userID), "")
		if err != nil {
			return nil, err
		}
		_, err = cli.Login(ctx, &mautrix.ReqLogin{
			Type:                     mautrix.AuthTypePassword,
			Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: acc.userID},
			Password:                 acc.password,
			InitialDeviceDisplayName: fmt.Sprintf("bench recipient %d", i),
			StoreCredentials:         true,
		})
		if err != nil {
			return nil, fmt.Errorf("recipient device login: %w", err)
		}
		helper, err := cryptohelper.NewCryptoHelper(cli, []byte("matrix2mqtt-bench"), filepath.Join(dir, fmt.Sprintf("device%d.db", i)))
		if err != nil {
			return nil, err
		}
		if err := helper.Init(ctx); err != nil { // uploads the device keys and one-time keys
			return nil, fmt.Errorf("recipient device keys: %w", err)
		}
		r.devices = append(r.devices, helper)
		r.clients = append(r.clients, cli)
	}
	return r, nil
}

func (r *recipient) close() {
	for _, d := range r.devices {
		_ = d.Close()
	}
}

// decryptOne has the recipient's first device sync (receiving the room keys the bridge sent to
// it) and decrypt evtID: proof that the bridge really encrypted for these devices.
func (r *recipient) decryptOne(ctx context.Context, roomID, evtID string) error {
	cli, helper := r.clients[0], r.devices[0]
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	go func() { _ = cli.SyncWithContext(sctx) }()
	var lastErr error
	for sctx.Err() == nil {
		evt, err := cli.GetEvent(sctx, id.RoomID(roomID), id.EventID(evtID))
		if err == nil {
			if err = evt.Content.ParseRaw(evt.Type); err == nil {
				var dec *event.Event
				if dec, err = helper.Decrypt(sctx, evt); err == nil {
					if dec.Type != event.EventMessage {
						return fmt.Errorf("decrypted %s, not a message", dec.Type.Type)
					}
					return nil
				}
			}
		}
		lastErr = err
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("recipient device could not decrypt %s: %v", evtID, lastErr)
}

// e2ee is scenario 4: scenario 1 (through the bridge) in an encrypted room whose other member
// has 1 or 10 devices, alternating with a plaintext room.
// errE2EEOff fails a scenario whose bridge started without encryption: on the benchmark's own
// servers that is a broken bridge, not a reason to skip.
var errE2EEOff = errors.New("the bridge started with E2EE off (bridge/info e2ee.enabled is false)")

func (b *bench) e2ee(ctx context.Context) error {
	if b.env == nil {
		b.rep.skip("4 e2ee", "skipped: "+errNeedsStack.Error())
		return nil
	}
	bot, err := b.account(ctx, "e2eebot")
	if err != nil {
		return err
	}
	// The recipients are made later, on this homeserver: the bridge accepts their invites (it
	// declines the invites AUTO_JOIN does not cover).
	env := b.bridgeEnv("e2ee", b.hs, bot.userID, bot.password, filepath.Join(b.dir, "data-e2ee"), map[string]string{
		"E2EE": "true", "E2EE_PICKLE_KEY": "matrix2mqtt-bench-pickle-key", "AUTO_JOIN": ":" + id.UserID(bot.userID).Homeserver(),
	})
	r, err := b.startBridge("e2ee", env)
	if err != nil {
		return err
	}
	defer b.closeBridge(r)
	if !r.info.E2EE.Enabled {
		return errE2EEOff
	}
	for _, devices := range b.o.devices {
		if err := b.e2eeWith(ctx, r, bot, devices); err != nil {
			return fmt.Errorf("%d devices: %w", devices, err)
		}
	}
	return nil
}

func (b *bench) e2eeWith(ctx context.Context, r *running, bot *account, devices int) error {
	rec, err := b.newRecipient(ctx, fmt.Sprintf("recipient%d-", devices), devices)
	if err != nil {
		return err
	}
	defer rec.close()
	encRooms, _, err := sharedRooms(ctx, rec.acc.cli, bot.cli, 1, "Benchmark encrypted", true)
	if err != nil {
		return err
	}
	plainRooms, _, err := sharedRooms(ctx, rec.acc.cli, bot.cli, 1, "Benchmark plaintext", false)
	if err != nil {
		return err
	}
	if _, err := waitRooms(r.mon, r.proc.started, 2, encRooms, time.Minute); err != nil {
		return err
	}
	w := startWatcher(rec.acc.cli) // the recipient's registration device: it has no keys
	defer w.close()
	<-w.ready
	conc := b.o.concurrency[0]
	per := max(1, b.o.e2eeN/b.o.rounds)
	warm := max(1, min(10, per/2))
	// The first message creates the Megolm session and shares it with every device.
	first := b.sendPhase(ctx, r, nil, encRooms, w, 1, 1)
	b.sendPhase(ctx, r, nil, plainRooms, w, warm, conc)
	b.sendPhase(ctx, r, nil, encRooms, w, warm, conc)
	var enc, plain phase
	for range b.o.rounds {
		plain.merge(b.sendPhase(ctx, r, nil, plainRooms, w, per, conc))
		enc.merge(b.sendPhase(ctx, r, nil, encRooms, w, per, conc))
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if enc.errors+plain.errors+first.errors > 0 {
		return fmt.Errorf("%d encrypted and %d plaintext errors (first: %s%s%s)", enc.errors+first.errors, plain.errors, first.firstErr, enc.firstErr, plain.firstErr)
	}
	if enc.types["m.room.encrypted"] != len(enc.seen) {
		return fmt.Errorf("the recipient saw %v in the encrypted room, not only m.room.encrypted", enc.types)
	}
	// A recipient device decrypts one of the messages.
	lastID := w.anyOfType("m.room.encrypted")
	verified := "not checked"
	if lastID != "" {
		if err := rec.decryptOne(ctx, encRooms[0], lastID); err != nil {
			return err
		}
		verified = "a recipient device decrypted a message"
	}
	sec := fmt.Sprintf("4 e2ee, %d device(s)", devices)
	b.compareRows(sec, enc, plain, "plaintext", "≥ 0.9", "")
	b.rep.add(row{Section: sec, Measure: "first message ms (Megolm session shared), publish → response", Bridge: first.resp.pct(50)})
	b.rep.detail("e2ee", fmt.Sprintf("devices%d", devices), map[string]any{
		"encrypted": phaseJSON(enc), "plaintext": phaseJSON(plain), "first": phaseJSON(first), "check": verified,
	})
	return nil
}
