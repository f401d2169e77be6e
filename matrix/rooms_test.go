package matrix

import (
	"context"
	"encoding/json"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"path/filepath"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// newOfflineClient makes a client on a fresh SQLite database that never reaches a homeserver.
func newOfflineClient(t *testing.T, onRoomsChanged func(context.Context, []wire.Room)) *Client {
	t.Helper()
	raw, err := dbutil.NewWithDialect("file:"+filepath.Join(t.TempDir(), "m.db")+"?_txlock=immediate", "sqlite3-fk-wal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	cfg := Config{Homeserver: "http://127.0.0.1:1", UserID: "@bot:hs", SyncTimeout: time.Second}
	c, err := New(context.Background(), cfg, raw, Options{OnRoomsChanged: onRoomsChanged})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRoomsChangedCoalesced checks that changes made while OnRoomsChanged runs are reported
// together by one more call, with the rooms as they are then.
func TestRoomsChangedCoalesced(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls := make(chan []wire.Room)
	release := make(chan struct{})
	c := newOfflineClient(t, func(_ context.Context, rooms []wire.Room) {
		calls <- rooms
		<-release
	})
	go c.reportRooms(ctx)
	c.markRoomsChanged()
	if first := <-calls; len(first) != 0 {
		t.Fatalf("first report = %v, want no rooms", first)
	}
	for _, roomID := range []string{"!a:hs", "!b:hs"} {
		if !c.rooms.joined(ctx, id.RoomID(roomID)) {
			t.Fatalf("joined(%s) reports nothing new", roomID)
		}
		c.markRoomsChanged()
	}
	release <- struct{}{}
	if second := <-calls; len(second) != 2 {
		t.Fatalf("second report = %v, want both rooms", second)
	}
	release <- struct{}{}
	select {
	case extra := <-calls:
		t.Fatalf("reported again without a change: %v", extra)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestSyncMarksRoomsChanged checks that a sync response that joins a room or renames one has the
// rooms reported, and one that changes nothing does not.
func TestSyncMarksRoomsChanged(t *testing.T) {
	ctx := context.Background()
	c := newOfflineClient(t, nil)
	sync := func(raw string) {
		t.Helper()
		var resp mautrix.RespSync
		if err := json.Unmarshal([]byte(raw), &resp); err != nil {
			t.Fatal(err)
		}
		if _, err := c.process(ctx, &resp, "s1"); err != nil {
			t.Fatal(err)
		}
	}
	changed := func() bool {
		select {
		case <-c.roomsChanged:
			return true
		default:
			return false
		}
	}
	sync(`{"next_batch":"s2","rooms":{"join":{"!a:hs":{"timeline":{"events":[
		{"type":"m.room.name","state_key":"","event_id":"$n","sender":"@alice:hs","origin_server_ts":1,"content":{"name":"Kitchen"}}]}}}}}`)
	if !changed() {
		t.Fatal("joining a room was not reported")
	}
	rooms, err := c.Rooms(ctx)
	if err != nil || len(rooms) != 1 || rooms[0].Name != "Kitchen" {
		t.Fatalf("Rooms() = %v, %v", rooms, err)
	}
	sync(`{"next_batch":"s3","rooms":{"join":{"!a:hs":{"timeline":{"events":[
		{"type":"m.room.message","event_id":"$m","sender":"@alice:hs","origin_server_ts":2,"content":{"msgtype":"m.text","body":"hi"}}]}}}}}`)
	if changed() {
		t.Fatal("a message was reported as a room change")
	}
	sync(`{"next_batch":"s4","rooms":{"leave":{"!a:hs":{}}}}`)
	if !changed() {
		t.Fatal("leaving a room was not reported")
	}
}
