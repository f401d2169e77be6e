package inbound

import (
	"context"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/stats"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// fakeReads covers every message once per user.
type fakeReads struct{ seen map[id.UserID]bool }

func (f *fakeReads) ReadUpTo(_ context.Context, _ id.RoomID, user id.UserID, _ id.EventID, _ time.Time) ([]store.SentMessage, error) {
	if f.seen[user] {
		return nil, nil
	}
	f.seen[user] = true
	return []store.SentMessage{{EventID: "$sent", RequestID: "q"}}, nil
}

// TestReadsAndPolls: a receipt and a later message each publish a read once per user; a vote
// is not published itself, the tally is, and only when it changes.
func TestReadsAndPolls(t *testing.T) {
	r := &recorder{published: map[id.EventID]bool{}}
	tg := targets.New(targets.Config{Names: targets.Names{"kitchen": "!k:hs"}})
	in := New(Deps{
		Topics: wire.Topics{Base: "m2m"}, Pub: r, Dedupe: r, Queue: r, Keys: tg, Stats: stats.New(clock.NewFake()),
		Filters: []Filter{NewReads(&fakeReads{seen: map[id.UserID]bool{}}), NewPolls(&fakePolls{votes: map[id.UserID][]string{}}, nil)},
	})
	vote := func(evt id.EventID, user id.UserID, answer string) matrix.Event {
		return matrix.Event{RoomID: "!k:hs", ID: evt, Payload: &wire.PollVote{EventID: evt, RoomID: "!k:hs", Sender: user, Poll: "$p", Answers: []string{answer}}}
	}
	batch := &matrix.Batch{
		Events: []matrix.Event{
			message("!k:hs", "$m1", "@b:hs", "hi"),
			vote("$v1", "@a:hs", "a1"),
			vote("$v2", "@a:hs", "a1"), // the same vote again: the tally does not change
			vote("$v3", "@c:hs", "a2"),
		},
		Receipts: []matrix.Receipt{{RoomID: "!k:hs", EventID: "$sent", User: "@a:hs"}, {RoomID: "!k:hs", EventID: "$sent", User: "@a:hs"}},
	}
	if err := in.HandleSync(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	count := func(s string) int {
		return len(slices.DeleteFunc(slices.Clone(r.log), func(l string) bool { return l != s }))
	}
	if n := count("publish m2m/room/kitchen/read"); n != 2 {
		t.Errorf("%d reads, want one for bob's message and one for alice's receipts:\n%v", n, r.log)
	}
	if n := count("publish m2m/room/kitchen/poll"); n != 2 {
		t.Errorf("%d tallies, want 2 (the repeated vote changes nothing):\n%v", n, r.log)
	}
	if n := count("publish m2m/room/kitchen/message"); n != 1 || slices.ContainsFunc(r.log, func(l string) bool { return l == "publish m2m/room/kitchen/" }) {
		t.Errorf("votes were published themselves:\n%v", r.log)
	}
}
