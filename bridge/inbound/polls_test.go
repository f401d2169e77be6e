package inbound

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/stats"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// fakePolls is one poll with its votes, as the store keeps them: the latest vote of each user,
// none after the end, the first end counts.
type fakePolls struct {
	votes map[id.UserID][]string
	ended time.Time
}

func (f *fakePolls) Poll(_ context.Context, evtID id.EventID) (store.Poll, bool, error) {
	return store.Poll{EventID: "$p", RoomID: "!k:hs", MaxSelections: 1, Answers: []store.PollOption{{ID: "a1"}, {ID: "a2"}}, EndedAt: f.ended},
		evtID == "$p", nil
}

func (f *fakePolls) Votes(context.Context, id.EventID) (map[id.UserID][]string, error) {
	return maps.Clone(f.votes), nil
}

func (f *fakePolls) Vote(_ context.Context, _ id.EventID, user id.UserID, answers []string, ts time.Time) (bool, error) {
	if !f.ended.IsZero() && ts.After(f.ended) {
		return false, nil
	}
	f.votes[user] = answers
	return true, nil
}

func (f *fakePolls) EndPoll(_ context.Context, _ id.EventID, at time.Time) (bool, error) {
	if !f.ended.IsZero() && !at.Before(f.ended) {
		return false, nil
	}
	f.ended = at
	return true, nil
}

// fakeLevels are a room where @mod:hs may redact others' events (50) and @bob:hs may not; the
// first failing reads of them fail.
type fakeLevels struct{ failing int }

func (f *fakeLevels) SyncedPowerLevels(context.Context, id.RoomID) (*event.PowerLevelsEventContent, error) {
	if f.failing > 0 {
		f.failing--
		return nil, errors.New("homeserver away")
	}
	return &event.PowerLevelsEventContent{Users: map[id.UserID]int{"@mod:hs": 50, "@bob:hs": 49}}, nil
}

// TestPollEnd: an end from a user who may not redact others' events, one whose sender's power
// cannot be read, or of another room's poll, is ignored; the earliest valid end ends the poll at
// its time and publishes the ended tally (again for an earlier end handled late); a vote after it
// and a later end change nothing.
func TestPollEnd(t *testing.T) {
	r := &recorder{published: map[id.EventID]bool{}}
	tg := targets.New(targets.Config{Names: targets.Names{"kitchen": "!k:hs"}})
	fp := &fakePolls{votes: map[id.UserID][]string{}}
	in := New(Deps{
		Topics: wire.Topics{Base: "m2m"}, Pub: r, Dedupe: r, Queue: r, Keys: tg, Stats: stats.New(clock.NewFake()),
		Filters: []Filter{NewPolls(fp, &fakeLevels{failing: 1})},
	})
	vote := func(evt id.EventID, user id.UserID, answer string, ts int64) matrix.Event {
		return matrix.Event{RoomID: "!k:hs", ID: evt, Payload: &wire.PollVote{EventID: evt, RoomID: "!k:hs", Sender: user, Poll: "$p", Answers: []string{answer}, Timestamp: ts}}
	}
	end := func(evt id.EventID, room id.RoomID, user id.UserID, ts int64) matrix.Event {
		return matrix.Event{RoomID: room, ID: evt, Payload: &wire.PollEnd{EventID: evt, RoomID: room, Sender: user, Poll: "$p", Timestamp: ts}}
	}
	batch := &matrix.Batch{Events: []matrix.Event{
		vote("$v1", "@a:hs", "a1", 1000),
		end("$e0", "!k:hs", "@mod:hs", 1500),     // the power levels cannot be read: ignored
		end("$e1", "!k:hs", "@bob:hs", 2000),     // may not redact: ignored
		end("$e2", "!other:hs", "@mod:hs", 2000), // another room's end
		vote("$v2", "@c:hs", "a2", 3000),
		end("$e3", "!k:hs", "@mod:hs", 4000),
		vote("$v3", "@d:hs", "a2", 5000), // after the end
		end("$e4", "!k:hs", "@mod:hs", 6000),
		end("$e5", "!k:hs", "@mod:hs", 3500), // handled late, but earlier in the timeline: it counts
	}}
	if err := in.HandleSync(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`m2m/room/kitchen/poll {"event_id":"$p","room_id":"!k:hs","question":"","answers":[{"id":"a1","text":"","votes":1},{"id":"a2","text":"","votes":0}],"voters":1,"spoiled":0,"ended":false,"winners":["a1"]}`,
		`m2m/room/kitchen/poll {"event_id":"$p","room_id":"!k:hs","question":"","answers":[{"id":"a1","text":"","votes":1},{"id":"a2","text":"","votes":1}],"voters":2,"spoiled":0,"ended":false,"winners":["a1","a2"]}`,
		`m2m/room/kitchen/poll {"event_id":"$p","room_id":"!k:hs","question":"","answers":[{"id":"a1","text":"","votes":1},{"id":"a2","text":"","votes":1}],"voters":2,"spoiled":0,"ended":true,"winners":["a1","a2"]}`,
		`m2m/room/kitchen/poll {"event_id":"$p","room_id":"!k:hs","question":"","answers":[{"id":"a1","text":"","votes":1},{"id":"a2","text":"","votes":1}],"voters":2,"spoiled":0,"ended":true,"winners":["a1","a2"]}`,
	}
	if got := strings.Join(r.payloads, "\n"); got != strings.Join(want, "\n") {
		t.Fatalf("published:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if fp.ended != time.UnixMilli(3500) {
		t.Fatalf("ended at %v, want the end event's time", fp.ended)
	}
}
