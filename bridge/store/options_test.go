package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
)

// TestOptions: a message's options are saved, updated with the bot's reactions, claimed once
// (again by the same answer, never by another), and pruned after OptionsRetention.
func TestOptions(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, clk *clock.Fake) {
		ctx := context.Background()
		set := OptionSet{EventID: "$m", RoomID: "!r:hs", RequestID: "q", SingleUse: true, Body: "b", HTML: "<b>b</b>",
			Content: `{"msgtype":"m.notice"}`, Options: []wire.Option{{Key: "👍", Label: "Yes"}}, Allowed: []id.UserID{"@a:hs"}}
		if err := s.SaveOptions(ctx, set); err != nil {
			t.Fatal(err)
		}
		set.Reactions = map[string]id.EventID{"👍": "$r"}
		if err := s.SaveOptions(ctx, set); err != nil {
			t.Fatal(err)
		}
		got, ok, err := s.Options(ctx, "$m")
		if err != nil || !ok || got.Reactions["👍"] != "$r" || got.Options[0].Label != "Yes" || got.Allowed[0] != "@a:hs" ||
			!got.SingleUse || got.RequestID != "q" || got.HTML != "<b>b</b>" || got.Content != `{"msgtype":"m.notice"}` {
			t.Fatalf("options = %+v, %v, %v", got, ok, err)
		}
		if _, ok, err := s.Options(ctx, "$other"); ok || err != nil {
			t.Fatalf("options of another message: %v, %v", ok, err)
		}
		for _, tc := range []struct {
			answer id.EventID
			want   bool
		}{{"$a1", true}, {"$a1", true}, {"$a2", false}} {
			if first, err := s.ClaimOptions(ctx, "$m", tc.answer); err != nil || first != tc.want {
				t.Fatalf("claim by %s = %v, %v", tc.answer, first, err)
			}
		}
		clk.Advance(OptionsRetention + time.Hour)
		if err := s.Prune(ctx); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.Options(ctx, "$m"); ok {
			t.Fatal("options not pruned")
		}
	})
}

// TestTags: a tag names one message per room; setting it again moves it; forgetting it only
// forgets the message it still names.
func TestTags(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ *clock.Fake) {
		ctx := context.Background()
		sent := time.UnixMilli(1700000000000)
		for _, step := range []struct {
			room id.RoomID
			evt  id.EventID
		}{{"!a:hs", "$1"}, {"!b:hs", "$2"}, {"!a:hs", "$3"}} {
			if err := s.SetTag(ctx, step.room, "w", step.evt, sent); err != nil {
				t.Fatal(err)
			}
		}
		if got, ok, err := s.Tag(ctx, "!a:hs", "w"); err != nil || !ok || got.EventID != "$3" || !got.SentAt.Equal(sent) {
			t.Fatalf("tag = %+v, %v, %v", got, ok, err)
		}
		if err := s.ForgetTag(ctx, "!a:hs", "w", "$1"); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.Tag(ctx, "!a:hs", "w"); !ok {
			t.Fatal("forgetting an older message forgot the tag")
		}
		if err := s.ForgetTag(ctx, "!a:hs", "w", "$3"); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := s.Tag(ctx, "!a:hs", "w"); ok {
			t.Fatal("tag not forgotten")
		}
		if _, ok, _ := s.Tag(ctx, "!b:hs", "w"); !ok {
			t.Fatal("another room's tag was forgotten")
		}
	})
}

// TestReadUpTo: a read covers the sent messages up to the one it names (or up to a time), each
// once per user, in one room only; both tables are pruned after ReadRetention.
func TestReadUpTo(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, clk *clock.Fake) {
		ctx := context.Background()
		base := clk.Now()
		var sent []Sent
		for i, evt := range []id.EventID{"$1", "$2", "$3"} {
			// $3 is a picture: watched for reads, but not what "edit": "last" replaces.
			sent = append(sent, Sent{RoomID: "!r:hs", EventID: evt, RequestID: "q" + string(evt[1:]), SentAt: base.Add(time.Duration(i) * time.Minute), Editable: evt != "$3"})
		}
		finishSending(t, s, sent...)
		finishSending(t, s, Sent{RoomID: "!other:hs", EventID: "$4", SentAt: base, Editable: true})
		if last, ok, err := s.Tag(ctx, "!r:hs", ""); err != nil || !ok || last.EventID != "$2" {
			t.Fatalf("the last editable message sent = %+v, %v, %v", last, ok, err)
		}
		ids := func(ms []SentMessage) (out []string) {
			for _, m := range ms {
				out = append(out, m.EventID.String()+"/"+m.RequestID)
			}
			return out
		}
		for _, tc := range []struct {
			user  id.UserID
			evt   id.EventID
			until time.Time
			want  string
		}{
			{"@a:hs", "$2", base.Add(time.Hour), "$1/q1 $2/q2"},
			{"@a:hs", "$2", base.Add(time.Hour), ""},
			{"@a:hs", "$unknown", base.Add(90 * time.Second), ""},
			{"@a:hs", "", base.Add(time.Hour), "$3/q3"},
			{"@b:hs", "", base.Add(30 * time.Second), "$1/q1"},
		} {
			got, err := s.ReadUpTo(ctx, "!r:hs", tc.user, tc.evt, tc.until)
			if err != nil {
				t.Fatal(err)
			}
			if g := strings.Join(ids(got), " "); g != tc.want {
				t.Fatalf("%s up to %s/%s: %q, want %q", tc.user, tc.evt, tc.until, g, tc.want)
			}
		}
		// @a has read everything (ReadUpTo remembers that); a message sent since is new to them.
		finishSending(t, s, Sent{RoomID: "!r:hs", EventID: "$5", RequestID: "q5", SentAt: base.Add(3 * time.Minute)})
		for _, want := range []string{"$5/q5", ""} {
			got, err := s.ReadUpTo(ctx, "!r:hs", "@a:hs", "", base.Add(time.Hour))
			if g := strings.Join(ids(got), " "); err != nil || g != want {
				t.Fatalf("@a after a new message: %q, %v; want %q", g, err, want)
			}
		}
		// A message recorded before its request is finished (a broadcast's copy) is new to @a
		// at once, and finishing the request later records nothing twice.
		early := Sent{RoomID: "!r:hs", EventID: "$6", RequestID: "q6", SentAt: base.Add(4 * time.Minute)}
		if err := s.RecordSent(ctx, []Sent{early}); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"$6/q6", ""} {
			got, err := s.ReadUpTo(ctx, "!r:hs", "@a:hs", "", base.Add(time.Hour))
			if g := strings.Join(ids(got), " "); err != nil || g != want {
				t.Fatalf("@a after an early record: %q, %v; want %q", g, err, want)
			}
		}
		finishSending(t, s, early)
		if got, err := s.ReadUpTo(ctx, "!r:hs", "@b:hs", "", base.Add(time.Hour)); err != nil || strings.Join(ids(got), " ") != "$2/q2 $3/q3 $5/q5 $6/q6" {
			t.Fatalf("@b reads %v, %v; want the four messages it had not read, once each", ids(got), err)
		}
		clk.Advance(ReadRetention + time.Hour)
		if err := s.Prune(ctx); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.ReadUpTo(ctx, "!r:hs", "@c:hs", "", clk.Now()); len(got) != 0 {
			t.Fatalf("not pruned: %v", got)
		}
	})
}

// TestPollVotes: the latest response of each voter is kept, an older one does not replace it,
// nothing after the end is recorded or counts, and the earliest end counts.
func TestPollVotes(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ *clock.Fake) {
		ctx := context.Background()
		p := Poll{EventID: "$p", RoomID: "!r:hs", Question: "?", MaxSelections: 1, Answers: []PollOption{{ID: "a1", Text: "A"}}}
		if err := s.SavePoll(ctx, p); err != nil {
			t.Fatal(err)
		}
		base := time.UnixMilli(1700000000000)
		for _, step := range []struct {
			user    id.UserID
			answers []string
			at      time.Duration
			want    bool
		}{
			{"@a", []string{"a1"}, 10 * time.Second, true},
			{"@a", []string{"a2"}, 5 * time.Second, false}, // older than the one recorded
			{"@a", []string{"a3"}, 20 * time.Second, true},
			{"@b", nil, 30 * time.Second, true},
		} {
			if got, err := s.Vote(ctx, "$p", step.user, step.answers, base.Add(step.at)); err != nil || got != step.want {
				t.Fatalf("vote %v at %s: %v, %v", step.answers, step.at, got, err)
			}
		}
		// Recorded before the end was known, but sent after it: it no longer counts.
		if got, err := s.Vote(ctx, "$p", "@d", []string{"a1"}, base.Add(90*time.Second)); err != nil || !got {
			t.Fatalf("vote before the end was known: %v, %v", got, err)
		}
		if ended, err := s.EndPoll(ctx, "$p", base.Add(time.Minute)); err != nil || !ended {
			t.Fatalf("end: %v, %v", ended, err)
		}
		if ended, err := s.EndPoll(ctx, "$p", base.Add(2*time.Minute)); err != nil || ended {
			t.Fatalf("a later end: %v, %v", ended, err)
		}
		if got, err := s.Vote(ctx, "$p", "@e", []string{"a1"}, base.Add(45*time.Second)); err != nil || !got {
			t.Fatalf("a vote before the end known so far: %v, %v", got, err)
		}
		// An end that came earlier in the timeline, learned late (a user's end handled while
		// end_poll waited for its own): it counts, and so the vote after it no longer does.
		if ended, err := s.EndPoll(ctx, "$p", base.Add(30*time.Second)); err != nil || !ended {
			t.Fatalf("an earlier end: %v, %v", ended, err)
		}
		if got, _ := s.Vote(ctx, "$p", "@c", []string{"a1"}, base.Add(2*time.Minute)); got {
			t.Fatal("a vote after the end was recorded")
		}
		if got, _ := s.Vote(ctx, "$other", "@c", []string{"a1"}, base); got {
			t.Fatal("a vote for an unknown poll was recorded")
		}
		votes, err := s.Votes(ctx, "$p")
		if err != nil || len(votes) != 2 || votes["@a"][0] != "a3" || len(votes["@b"]) != 0 {
			t.Fatalf("votes %v, %v", votes, err)
		}
		got, ok, err := s.Poll(ctx, "$p")
		if err != nil || !ok || !got.EndedAt.Equal(base.Add(30*time.Second)) || got.Answers[0].Text != "A" {
			t.Fatalf("poll %+v %v %v", got, ok, err)
		}
	})
}

// finishSending adds an outbox entry and finishes it as having sent sent.
func finishSending(t *testing.T, s *Store, sent ...Sent) {
	t.Helper()
	ctx := context.Background()
	e := &Entry{Action: "send", Lane: "!r:hs", Request: []byte(`{}`), TxnID: fmt.Sprintf("sent-%s", sent[0].EventID), CreatedAt: s.clock.Now()}
	if _, err := s.Add(ctx, []*Entry{e}); err != nil {
		t.Fatal(err)
	}
	e.Sent = sent
	if err := s.Finish(ctx, e, nil); err != nil {
		t.Fatal(err)
	}
}
