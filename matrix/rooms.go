package matrix

import (
	"context"
	"errors"
	"fmt"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"slices"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// ErrUnknownTarget means a target does not name a room the bot can reach.
var ErrUnknownTarget = errors.New("unknown target")

const aliasCacheTTL = 5 * time.Minute

// roomsRetryWait is the wait before listing the rooms again after the database failed.
const roomsRetryWait = 5 * time.Second

// markRoomsChanged has the joined rooms reported to Options.OnRoomsChanged soon.
func (c *Client) markRoomsChanged() {
	select {
	case c.roomsChanged <- struct{}{}:
	default: // a report is due already, and lists the rooms as they are when it runs
	}
}

// reportRooms calls Options.OnRoomsChanged with the joined rooms after each change, until ctx
// ends. It runs apart from the sync loop, so that a slow callback never holds back the sync
// token.
func (c *Client) reportRooms(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.roomsChanged:
		}
		rooms, err := c.rooms.list(ctx)
		if err != nil {
			c.log.Warn().Err(err).Msg("Failed to list rooms")
			c.markRoomsChanged()
			if sleep(ctx, roomsRetryWait) != nil {
				return
			}
			continue
		}
		c.opts.OnRoomsChanged(ctx, rooms)
	}
}

type aliasEntry struct {
	room    id.RoomID
	expires time.Time
}

// roomTracker keeps the joined rooms (in the database, so an incremental sync after a restart
// still knows them), the direct chats from m.direct, and resolved aliases.
type roomTracker struct {
	c *Client

	mu      sync.Mutex
	names   map[id.RoomID]string // joined rooms and their names, a cache of matrix2mqtt_room
	loaded  bool
	direct  map[id.UserID][]id.RoomID
	dmUsers map[id.RoomID]id.UserID
	aliases map[id.RoomAlias]aliasEntry

	dmMu sync.Mutex // one DM creation at a time, so two requests never make two rooms
}

func newRoomTracker(c *Client) *roomTracker {
	return &roomTracker{c: c, names: map[id.RoomID]string{}, aliases: map[id.RoomAlias]aliasEntry{}}
}

func (t *roomTracker) load(ctx context.Context) error {
	if t.loaded {
		return nil
	}
	rows, err := t.c.db.Query(ctx, "SELECT room_id, name FROM matrix2mqtt_room")
	if err != nil {
		return fmt.Errorf("failed to load rooms: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var roomID id.RoomID
		var name string
		if err := rows.Scan(&roomID, &name); err != nil {
			return fmt.Errorf("failed to load rooms: %w", err)
		}
		t.names[roomID] = name
	}
	t.loaded = true
	return rows.Err()
}

// joined records that the bot is in roomID; it reports whether that is new.
func (t *roomTracker) joined(ctx context.Context, roomID id.RoomID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.load(ctx); err != nil {
		t.c.log.Warn().Err(err).Msg("Failed to load rooms")
	}
	if _, ok := t.names[roomID]; ok {
		return false
	}
	t.names[roomID] = ""
	if _, err := t.c.db.Exec(ctx, "INSERT INTO matrix2mqtt_room (room_id) VALUES ($1) ON CONFLICT (room_id) DO NOTHING", roomID); err != nil {
		t.c.log.Warn().Err(err).Msg("Failed to save room")
	}
	return true
}

// left forgets roomID; it reports whether the bot was in it.
func (t *roomTracker) left(ctx context.Context, roomID id.RoomID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.load(ctx); err != nil {
		t.c.log.Warn().Err(err).Msg("Failed to load rooms")
	}
	_, was := t.names[roomID]
	delete(t.names, roomID)
	if _, err := t.c.db.Exec(ctx, "DELETE FROM matrix2mqtt_room WHERE room_id=$1", roomID); err != nil {
		t.c.log.Warn().Err(err).Msg("Failed to delete room")
	}
	return was
}

// stateEvent applies a state event of a joined room; it reports whether the room list changed.
func (t *roomTracker) stateEvent(ctx context.Context, evt *event.Event) bool {
	var column, value string
	switch evt.Type {
	case event.StateRoomName:
		column, value = "name", evt.Content.AsRoomName().Name
	case event.StateCanonicalAlias:
		column, value = "alias", string(evt.Content.AsCanonicalAlias().Alias)
	case event.StateEncryption, event.StateMember, event.StatePowerLevels:
		return true
	default:
		return false
	}
	t.joined(ctx, evt.RoomID)
	if column == "name" {
		t.mu.Lock()
		t.names[evt.RoomID] = value
		t.mu.Unlock()
	}
	if _, err := t.c.db.Exec(ctx, "UPDATE matrix2mqtt_room SET "+column+"=$2 WHERE room_id=$1", evt.RoomID, value); err != nil {
		t.c.log.Warn().Err(err).Msg("Failed to save room state")
	}
	return true
}

func (t *roomTracker) name(roomID id.RoomID) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.names[roomID]
}

func (t *roomTracker) isJoined(ctx context.Context, roomID id.RoomID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.load(ctx); err != nil {
		t.c.log.Warn().Err(err).Msg("Failed to load rooms")
	}
	_, ok := t.names[roomID]
	return ok
}

func (t *roomTracker) setDirect(direct event.DirectChatsEventContent) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.direct = direct
	t.dmUsers = make(map[id.RoomID]id.UserID)
	for user, rooms := range direct {
		for _, r := range rooms {
			t.dmUsers[r] = user
		}
	}
}

func (t *roomTracker) loadDirect(ctx context.Context) error {
	var direct event.DirectChatsEventContent
	err := t.c.cli.GetAccountData(ctx, event.AccountDataDirectChats.Type, &direct)
	if err != nil && !errors.Is(err, mautrix.MNotFound) {
		return fmt.Errorf("failed to get m.direct: %w", err)
	}
	t.setDirect(direct)
	return nil
}

// addDirect records roomID as the DM with user in m.direct, on the server and here.
func (t *roomTracker) addDirect(ctx context.Context, user id.UserID, roomID id.RoomID) error {
	var direct event.DirectChatsEventContent
	err := t.c.cli.GetAccountData(ctx, event.AccountDataDirectChats.Type, &direct)
	if err != nil && !errors.Is(err, mautrix.MNotFound) {
		return fmt.Errorf("failed to get m.direct: %w", err)
	}
	if direct == nil {
		direct = event.DirectChatsEventContent{}
	}
	if !slices.Contains(direct[user], roomID) {
		direct[user] = append(direct[user], roomID)
		if err := t.c.cli.SetAccountData(ctx, event.AccountDataDirectChats.Type, direct); err != nil {
			return fmt.Errorf("failed to set m.direct: %w", err)
		}
	}
	t.setDirect(direct)
	return nil
}

// ensureDM returns the DM room with user, creating it (and recording it in m.direct) when there
// is none that both are in.
func (t *roomTracker) ensureDM(ctx context.Context, user id.UserID, encrypted bool) (id.RoomID, bool, error) {
	t.dmMu.Lock()
	defer t.dmMu.Unlock()
	if roomID, ok := t.existingDM(ctx, user); ok {
		return roomID, false, nil
	}
	if _, err := t.c.cli.GetProfile(ctx, user); errors.Is(err, mautrix.MNotFound) {
		return "", false, fmt.Errorf("%w: user %s does not exist", ErrUnknownTarget, user)
	}
	req := &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{user}}
	if encrypted {
		req.InitialState = append(req.InitialState, &event.Event{
			Type:    event.StateEncryption,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		})
	}
	resp, err := t.c.cli.CreateRoom(ctx, req)
	if err != nil {
		return "", false, fmt.Errorf("failed to create DM with %s: %w", user, err)
	}
	t.joined(ctx, resp.RoomID)
	if err := t.c.state.SetMembership(ctx, resp.RoomID, user, event.MembershipInvite); err != nil {
		t.c.log.Warn().Err(err).Msg("Failed to record DM invite")
	}
	if err := t.addDirect(ctx, user, resp.RoomID); err != nil {
		return resp.RoomID, true, err
	}
	return resp.RoomID, true, nil
}

// existingDM returns the newest room in m.direct for user that the bot is in and the user is in
// or invited to.
func (t *roomTracker) existingDM(ctx context.Context, user id.UserID) (id.RoomID, bool) {
	t.mu.Lock()
	candidates := slices.Clone(t.direct[user])
	t.mu.Unlock()
	for _, roomID := range slices.Backward(candidates) {
		if t.isJoined(ctx, roomID) && t.c.state.IsMembership(ctx, roomID, user, event.MembershipJoin, event.MembershipInvite) {
			return roomID, true
		}
	}
	return "", false
}

// resolveAlias returns the room an alias points to, cached for a few minutes.
func (t *roomTracker) resolveAlias(ctx context.Context, alias id.RoomAlias) (id.RoomID, error) {
	t.mu.Lock()
	entry, ok := t.aliases[alias]
	t.mu.Unlock()
	if ok && time.Now().Before(entry.expires) {
		return entry.room, nil
	}
	resp, err := t.c.cli.ResolveAlias(ctx, alias)
	if errors.Is(err, mautrix.MNotFound) {
		return "", fmt.Errorf("%w: alias %s does not exist", ErrUnknownTarget, alias)
	} else if err != nil {
		return "", fmt.Errorf("failed to resolve alias %s: %w", alias, err)
	}
	t.mu.Lock()
	t.aliases[alias] = aliasEntry{room: resp.RoomID, expires: time.Now().Add(aliasCacheTTL)}
	t.mu.Unlock()
	return resp.RoomID, nil
}

// list returns the joined rooms with their details.
func (t *roomTracker) list(ctx context.Context) ([]wire.Room, error) {
	rows, err := t.c.db.Query(ctx, "SELECT room_id, name, alias FROM matrix2mqtt_room ORDER BY room_id")
	if err != nil {
		return nil, fmt.Errorf("failed to list rooms: %w", err)
	}
	var rooms []wire.Room
	for rows.Next() {
		var r wire.Room
		if err := rows.Scan(&r.ID, &r.Name, &r.Alias); err != nil {
			rows.Close()
			return nil, fmt.Errorf("failed to list rooms: %w", err)
		}
		rooms = append(rooms, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("failed to list rooms: %w", err)
	}
	t.mu.Lock()
	for i := range rooms {
		rooms[i].DMUser, rooms[i].IsDM = t.dmUsers[rooms[i].ID]
	}
	t.mu.Unlock()
	for i := range rooms {
		r := &rooms[i]
		r.Encrypted, _ = t.c.state.IsEncrypted(ctx, r.ID)
		members, err := t.c.state.GetRoomMembers(ctx, r.ID, event.MembershipJoin)
		if err == nil {
			r.Members = len(members)
		}
		if pl, err := t.c.state.GetPowerLevels(ctx, r.ID); err == nil && pl != nil {
			r.PowerLevel = pl.GetUserLevel(t.c.cli.UserID)
		}
		if r.Name == "" && r.IsDM {
			r.Name = t.c.displayName(ctx, r.ID, r.DMUser)
		}
	}
	return rooms, nil
}
