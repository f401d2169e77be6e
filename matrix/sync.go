package matrix

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix/mapping"
	"maps"
	"slices"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/matrix/e2ee"
)

// handOverTimeout bounds how long one sync response may take to be handed to the broker.
const handOverTimeout = 30 * time.Second

var syncFilter = &mautrix.Filter{
	Presence: &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
	Room: &mautrix.RoomFilter{
		// Receipts only: they tell which of the bridge's messages were read.
		Ephemeral: &mautrix.FilterPart{Types: []event.Type{event.EphemeralEventReceipt}},
		Timeline:  &mautrix.FilterPart{Limit: 50},
	},
}

func (c *Client) loadSyncToken(ctx context.Context) (string, error) {
	var token string
	err := c.db.QueryRow(ctx, "SELECT next_batch FROM matrix2mqtt_sync WHERE user_id=$1", c.cfg.UserID).Scan(&token)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("failed to load sync token: %w", err)
	}
	return token, nil
}

func (c *Client) saveSyncToken(ctx context.Context, token string) error {
	_, err := c.db.Exec(ctx, `
		INSERT INTO matrix2mqtt_sync (user_id, next_batch) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET next_batch=excluded.next_batch`, c.cfg.UserID, token)
	if err != nil {
		return fmt.Errorf("failed to save sync token: %w", err)
	}
	return nil
}

// Run logs in (retrying until it works or ctx ends), then syncs until ctx ends. Each sync
// response is handed to h as a Batch, and its token is saved only after h accepted the batch.
// The first sync of a new session publishes no history. loggedIn runs once after login, before
// the first call of Options.OnRoomsChanged.
func (c *Client) Run(ctx context.Context, h Handler, loggedIn func(context.Context)) error {
	c.handler = h
	for attempt := 0; ; attempt++ {
		err := c.Login(ctx)
		if err == nil {
			break
		}
		if attempt == 0 { // once per outage, not on every retry
			h.HandleNotice(ctx, wire.Notice{Type: "login_failed", Message: err.Error()})
		}
		wait := Backoff(attempt, time.Second, time.Minute)
		c.log.Error().Err(err).Dur("retry_in", wait).Msg("Failed to log in to Matrix")
		if sleep(ctx, wait) != nil {
			return ctx.Err()
		}
	}
	if c.cfg.E2EE.Enabled {
		crypto, err := e2ee.Start(ctx, c.cfg.E2EE, c.cryptoOptions())
		switch {
		case errors.Is(err, e2ee.ErrIdentityLocked):
			// Unencrypted rooms keep working; encrypted ones are refused until the operator acts.
			c.e2eeBroken = err.Error()
			c.log.Error().Err(err).Msg("E2EE is broken: the bot's cross-signing identity is locked")
			h.HandleNotice(ctx, wire.Notice{Type: "e2ee_broken", Message: err.Error()})
		case err != nil:
			return err
		default:
			c.crypto = crypto
			go crypto.RunBackup(ctx)
			go crypto.RetryWaiting(ctx)
		}
	}
	if err := c.rooms.loadDirect(ctx); err != nil {
		c.log.Warn().Err(err).Msg("Failed to load direct chats")
	}
	if loggedIn != nil {
		loggedIn(ctx)
	}
	if c.opts.OnRoomsChanged != nil {
		c.markRoomsChanged() // the list as it is after login
		go c.reportRooms(ctx)
	}
	since, err := c.loadSyncToken(ctx)
	if err != nil {
		return err
	}
	var filterID string
	for attempt := 0; ctx.Err() == nil; {
		if filterID == "" {
			resp, err := c.cli.CreateFilter(ctx, syncFilter)
			if err != nil {
				attempt = c.syncFailed(ctx, h, attempt, err)
				continue
			}
			filterID = resp.FilterID
		}
		timeout := int(c.cfg.SyncTimeout.Milliseconds())
		if since == "" {
			timeout = 0
		}
		resp, err := c.cli.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: timeout, Since: since, FilterID: filterID})
		if err != nil {
			attempt = c.syncFailed(ctx, h, attempt, err)
			continue
		}
		if attempt > 0 {
			c.log.Info().Msg("Matrix sync recovered")
		}
		attempt = 0
		c.setHealthy(true)
		if c.opts.OnSync != nil {
			c.opts.OnSync(nil)
		}
		// A response that arrived is handed over and its token saved even when ctx ends
		// meanwhile, so that a shutdown does not publish the same events again next time.
		handCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), handOverTimeout)
		// Decryption may go on in the background (waiting for keys) after the hand-over.
		batch, err := c.process(context.WithoutCancel(ctx), resp, since)
		if err != nil {
			c.log.Error().Err(err).Msg("Failed to process sync response")
		}
		if err := h.HandleSync(handCtx, batch); err != nil {
			cancel()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.log.Error().Err(err).Msg("Failed to hand over sync batch; syncing the same range again")
			_ = sleep(ctx, time.Second)
			continue
		}
		if err := c.echoes.SaveWithToken(handCtx, func(ctx context.Context) error {
			if c.crypto != nil {
				if err := c.crypto.SaveWaiting(ctx, maps.Values(batch.undecrypted)); err != nil {
					return err
				}
			}
			return c.saveSyncToken(ctx, resp.NextBatch)
		}); err != nil {
			c.log.Error().Err(err).Msg("Failed to save sync token")
		}
		if c.crypto != nil {
			if err := c.crypto.StopWaiting(handCtx, batch.EventIDs()...); err != nil {
				c.log.Error().Err(err).Msg("Failed to forget decrypted events")
			}
			c.crypto.WakeBackup()
		}
		cancel()
		c.syncMu.Lock()
		close(c.nextSync)
		c.nextSync = make(chan struct{})
		c.syncMu.Unlock()
		since = resp.NextBatch
		c.autoJoin(ctx, h, batch.invites)
		c.followUpgrades(ctx, h, batch.tombstones)
	}
	return ctx.Err()
}

// syncRetryLimit caps the wait between failed syncs: requests in doubt wait for sync after an
// outage, so sync must notice soon that the homeserver is back.
const syncRetryLimit = 5 * time.Second

// syncFailed logs a failed sync request, recovers the session where it can, waits, and returns
// the next attempt number.
func (c *Client) syncFailed(ctx context.Context, h Handler, attempt int, err error) int {
	if ctx.Err() != nil {
		return attempt
	}
	c.setHealthy(false)
	if c.opts.OnSync != nil {
		c.opts.OnSync(err)
	}
	if c.recoverAuth(ctx, err) {
		return 0
	}
	wait := Backoff(attempt, time.Second, syncRetryLimit)
	c.log.Warn().Err(err).Dur("retry_in", wait).Msg("Matrix sync failed")
	_ = sleep(ctx, wait)
	return attempt + 1
}

// process runs the response through the syncer (state store, crypto, and onEvent) and returns
// what onEvent collected. When the joined rooms changed, it has them reported once the state
// store holds all of the response.
func (c *Client) process(ctx context.Context, resp *mautrix.RespSync, since string) (*Batch, error) {
	batch := &Batch{initial: since == ""}
	c.collectMu.Lock()
	c.collect = batch
	c.collectMu.Unlock()
	defer func() {
		c.collectMu.Lock()
		c.collect = nil
		c.collectMu.Unlock()
	}()
	if since != "" {
		c.backfillLimited(ctx, resp, since, batch)
	}
	err := c.syncer.ProcessResponse(ctx, resp, since)
	for roomID := range resp.Rooms.Leave {
		if c.rooms.left(ctx, roomID) {
			batch.roomsChanged = true
		}
	}
	for roomID := range resp.Rooms.Join {
		if c.rooms.joined(ctx, roomID) {
			batch.roomsChanged = true
		}
	}
	if batch.roomsChanged {
		c.markRoomsChanged()
	}
	return batch, err
}

// maxBackfill bounds the events fetched for one room when a sync skipped some.
const maxBackfill = 1000

// backfillLimited puts back the events a sync left out: after a long outage the homeserver
// sends only the newest events of a busy room ("limited"), and the ones between the previous
// sync and those are fetched with /messages and put in front of the timeline.
func (c *Client) backfillLimited(ctx context.Context, resp *mautrix.RespSync, since string, batch *Batch) {
	for roomID, room := range resp.Rooms.Join {
		if !room.Timeline.Limited || room.Timeline.PrevBatch == "" {
			continue
		}
		var missed []*event.Event
		from := room.Timeline.PrevBatch
		for len(missed) < maxBackfill {
			page, err := c.cli.Messages(ctx, roomID, from, since, mautrix.DirectionBackward, nil, 100)
			if err != nil {
				c.log.Warn().Err(err).Stringer("room_id", roomID).Msg("Failed to fetch events the sync left out")
				batch.Notices = append(batch.Notices, wire.Notice{Type: "events_skipped", RoomID: roomID, Message: err.Error()})
				break
			}
			missed = append(missed, page.Chunk...)
			if page.End == "" || len(page.Chunk) == 0 {
				break
			}
			from = page.End
		}
		if len(missed) >= maxBackfill {
			batch.Notices = append(batch.Notices, wire.Notice{Type: "events_skipped", RoomID: roomID,
				Message: fmt.Sprintf("more than %d events arrived while the bridge was away; older ones are not published", maxBackfill)})
		}
		slices.Reverse(missed)
		c.log.Debug().Stringer("room_id", roomID).Int("count", len(missed)).Msg("Fetched events the sync left out")
		room.Timeline.Events = append(missed, room.Timeline.Events...)
	}
}

// onEvent receives every event the syncer dispatches, and decrypted events later.
func (c *Client) onEvent(ctx context.Context, evt *event.Event) {
	c.collectMu.Lock()
	batch := c.collect
	c.collectMu.Unlock()
	late := batch == nil
	if late {
		batch = &Batch{}
	}
	src := evt.Mautrix.EventSource
	switch {
	case evt.Type == event.AccountDataDirectChats:
		if content, ok := evt.Content.Parsed.(*event.DirectChatsEventContent); ok {
			c.rooms.setDirect(*content)
			batch.roomsChanged = true
		}
	case src&event.SourceInvite != 0:
		if evt.Type == event.StateMember && evt.GetStateKey() == string(c.cli.UserID) &&
			evt.Content.AsMember().Membership == event.MembershipInvite {
			batch.invites = append(batch.invites, evt)
			batch.Notices = append(batch.Notices, wire.Notice{Type: "invite", RoomID: evt.RoomID, Sender: evt.Sender, Membership: event.MembershipInvite})
		}
	case evt.Type == event.EphemeralEventReceipt && src&event.SourceJoin != 0:
		if !batch.initial {
			batch.Receipts = append(batch.Receipts, c.receipts(evt)...)
		}
	case evt.StateKey != nil && src&event.SourceJoin != 0:
		if c.rooms.stateEvent(ctx, evt) {
			batch.roomsChanged = true
		}
		if evt.Type == event.StateMember && src&event.SourceTimeline != 0 && !batch.initial &&
			evt.GetStateKey() != string(c.cli.UserID) && mapping.MembershipChanged(evt) {
			batch.Notices = append(batch.Notices, wire.Notice{
				Type: "membership", RoomID: evt.RoomID, UserID: id.UserID(evt.GetStateKey()),
				Sender: evt.Sender, Membership: evt.Content.AsMember().Membership,
			})
		}
		if evt.Type == event.StateTombstone && src&event.SourceTimeline != 0 {
			batch.tombstones = append(batch.tombstones, evt)
		}
		// Changes the bot made to others count like anyone's; its own joins and leaves show in
		// <base>/bridge/rooms instead.
		ownMembership := evt.Sender == c.cli.UserID && evt.GetStateKey() == string(c.cli.UserID)
		if src&event.SourceTimeline != 0 && !batch.initial && !ownMembership {
			if ev, ok := c.membershipEvent(ctx, evt); ok {
				batch.Events = append(batch.Events, ev)
			}
		}
	case src&event.SourceTimeline != 0 && src&event.SourceJoin != 0:
		if evt.Sender == c.cli.UserID {
			if evt.Unsigned.TransactionID != "" {
				c.echoes.Add(evt.Unsigned.TransactionID, evt.ID)
			}
			return
		}
		if batch.initial {
			return
		}
		if !late && c.crypto != nil { // without E2EE encrypted events are not published
			c.trackDecryption(batch, evt)
		}
		if evt.Type == event.EventEncrypted {
			return
		}
		ev, ok := normalise(evt)
		if !ok {
			return
		}
		c.fillNames(ctx, ev)
		batch.Events = append(batch.Events, ev)
	}
	// Late events are the ones the crypto helper decrypted once their keys came.
	if late && (len(batch.Events) > 0 || len(batch.Notices) > 0) && c.handler != nil {
		if err := c.handler.HandleSync(ctx, batch); err != nil {
			c.log.Error().Err(err).Msg("Failed to hand over late event")
			return
		}
		if err := c.crypto.StopWaiting(ctx, batch.EventIDs()...); err != nil {
			c.log.Error().Err(err).Msg("Failed to forget a decrypted event")
		}
	}
}

// trackDecryption keeps the batch's list of encrypted events that wait for their keys: an
// encrypted event is added, and removed once it comes again decrypted. undecryptable removes
// failures from another goroutine, so the list is changed under collectMu.
func (c *Client) trackDecryption(batch *Batch, evt *event.Event) {
	c.collectMu.Lock()
	defer c.collectMu.Unlock()
	switch {
	case evt.Type == event.EventEncrypted:
		if batch.undecrypted == nil {
			batch.undecrypted = map[id.EventID]*event.Event{}
		}
		batch.undecrypted[evt.ID] = evt
	case evt.Mautrix.WasEncrypted:
		delete(batch.undecrypted, evt.ID)
	}
}

// fillNames sets the room and sender display names on a normalised event.
func (c *Client) fillNames(ctx context.Context, ev Event) {
	roomName := c.rooms.name(ev.RoomID)
	switch p := ev.Payload.(type) {
	case *wire.Message:
		p.RoomName, p.SenderName = roomName, c.displayName(ctx, ev.RoomID, p.Sender)
	case *wire.Reaction:
		p.RoomName, p.SenderName = roomName, c.displayName(ctx, ev.RoomID, p.Sender)
	case *wire.Redaction:
		p.RoomName, p.SenderName = roomName, c.displayName(ctx, ev.RoomID, p.Sender)
	}
}

func (c *Client) displayName(ctx context.Context, roomID id.RoomID, user id.UserID) string {
	member, err := c.state.TryGetMember(ctx, roomID, user)
	if err == nil && member != nil && member.Displayname != "" {
		return member.Displayname
	}
	return user.Localpart()
}

func (c *Client) autoJoin(ctx context.Context, h Handler, invites []*event.Event) {
	for _, inv := range invites {
		if !c.cfg.acceptsInviteFrom(inv.Sender) {
			c.declineInvite(ctx, h, inv)
			continue
		}
		if _, err := c.cli.JoinRoomByID(ctx, inv.RoomID); err != nil {
			c.log.Warn().Err(err).Stringer("room_id", inv.RoomID).Msg("Failed to accept invite")
			h.HandleNotice(ctx, wire.Notice{Type: "join_failed", RoomID: inv.RoomID, Sender: inv.Sender, Message: err.Error()})
			continue
		}
		if c.rooms.joined(ctx, inv.RoomID) {
			c.markRoomsChanged()
		}
		if inv.Content.AsMember().IsDirect {
			if err := c.rooms.addDirect(ctx, inv.Sender, inv.RoomID); err != nil {
				c.log.Warn().Err(err).Msg("Failed to record direct chat")
			}
		}
		c.log.Info().Stringer("room_id", inv.RoomID).Stringer("sender", inv.Sender).Msg("Accepted invite")
	}
}

// declineInvite rejects an invite that AUTO_JOIN does not cover, and reports it.
func (c *Client) declineInvite(ctx context.Context, h Handler, inv *event.Event) {
	notice := wire.Notice{Type: "invite_declined", RoomID: inv.RoomID, Sender: inv.Sender, Message: "the sender is not covered by AUTO_JOIN"}
	err := c.retryAuth(ctx, func() error {
		_, err := c.cli.LeaveRoom(ctx, inv.RoomID)
		return err
	})
	if err != nil {
		c.log.Warn().Err(err).Stringer("room_id", inv.RoomID).Msg("Failed to decline invite")
		notice.Message += "; declining failed: " + err.Error()
	} else {
		c.log.Info().Stringer("room_id", inv.RoomID).Stringer("sender", inv.Sender).Msg("Declined invite not covered by AUTO_JOIN")
	}
	h.HandleNotice(ctx, notice)
}
