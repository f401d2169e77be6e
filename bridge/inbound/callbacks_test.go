package inbound

import (
	"context"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// fakeSets holds option sets in memory, as the store does.
type fakeSets map[id.EventID]*store.OptionSet

func (f fakeSets) Options(_ context.Context, evtID id.EventID) (store.OptionSet, bool, error) {
	if s, ok := f[evtID]; ok {
		return *s, true, nil
	}
	return store.OptionSet{}, false, nil
}

func (f fakeSets) ClaimOptions(_ context.Context, evtID, answerID id.EventID) (bool, error) {
	s := f[evtID]
	if s.AnsweredBy != "" && s.AnsweredBy != answerID {
		return false, nil
	}
	s.AnsweredBy = answerID
	return true, nil
}

func TestCallbacks(t *testing.T) {
	options := []wire.Option{{Key: "👍", Label: "Yes"}, {Key: "👎", Label: "No"}}
	tests := []struct {
		name         string
		set          store.OptionSet
		verifiedOnly bool
		reactions    []wire.Reaction // in order
		want         []string        // callbacks: reaction event IDs
		closes       int
	}{
		{"any member", store.OptionSet{}, false,
			[]wire.Reaction{{EventID: "$1", Sender: "@a:hs", Key: "👍"}, {EventID: "$2", Sender: "@b:hs", Key: "👎"}}, []string{"$1", "$2"}, 0},
		{"another key", store.OptionSet{}, false, []wire.Reaction{{EventID: "$1", Sender: "@a:hs", Key: "🎉"}}, nil, 0},
		{"another message", store.OptionSet{EventID: "$other"}, false, []wire.Reaction{{EventID: "$1", Sender: "@a:hs", Key: "👍"}}, nil, 0},
		{"a reaction from another room", store.OptionSet{}, false,
			[]wire.Reaction{{EventID: "$1", RoomID: "!elsewhere:hs", Sender: "@a:hs", Key: "👍"}}, nil, 0},
		{"options_from", store.OptionSet{Allowed: []id.UserID{"@a:hs"}}, false,
			[]wire.Reaction{{EventID: "$1", Sender: "@b:hs", Key: "👍"}, {EventID: "$2", Sender: "@a:hs", Key: "👎"}}, []string{"$2"}, 0},
		{"verified only", store.OptionSet{}, true,
			[]wire.Reaction{{EventID: "$1", Sender: "@a:hs", Key: "👍"}, {EventID: "$2", Sender: "@b:hs", Key: "👍", SenderVerified: true}}, []string{"$2"}, 0},
		{"single_use takes the first answer", store.OptionSet{SingleUse: true}, false,
			[]wire.Reaction{{EventID: "$1", Sender: "@a:hs", Key: "👍"}, {EventID: "$2", Sender: "@b:hs", Key: "👎"}}, []string{"$1"}, 1},
		{"single_use answer handed over again", store.OptionSet{SingleUse: true}, false,
			[]wire.Reaction{{EventID: "$1", Sender: "@a:hs", Key: "👍"}, {EventID: "$1", Sender: "@a:hs", Key: "👍"}}, []string{"$1", "$1"}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			set := tc.set
			if set.EventID == "" {
				set.EventID = "$m"
			}
			set.RoomID, set.Options, set.Reactions = "!r:hs", options, map[string]id.EventID{"👍": "$b1", "👎": "$b2"}
			f := NewCallbacks(CallbackConfig{VerifiedOnly: tc.verifiedOnly}, fakeSets{set.EventID: &set})
			var got []string
			out := &Output{topics: wire.Topics{Base: "m2m"}, publish: func(topic string, v any) {
				if topic != "m2m/room/r/callback" {
					t.Fatalf("published on %s", topic)
				}
				got = append(got, v.(*wire.Callback).ReactionID.String())
			}}
			for _, r := range tc.reactions {
				r.RelatesTo = "$m"
				if r.RoomID == "" {
					r.RoomID = "!r:hs"
				}
				f.Inbound(context.Background(), matrix.Event{Kind: wire.KindReaction, RoomID: r.RoomID, ID: r.EventID, Payload: &r}, "r", out)
			}
			if len(got) != len(tc.want) || len(got) > 0 && got[0] != tc.want[0] {
				t.Fatalf("callbacks %v, want %v", got, tc.want)
			}
			if len(out.jobs) != tc.closes {
				t.Fatalf("queued %d jobs, want %d", len(out.jobs), tc.closes)
			}
			for _, j := range out.jobs {
				c := j.Request.(*actions.CloseOptions)
				if j.Action != actions.ActionCloseOptions || len(c.Reactions) != 2 || c.Closed != "✅ Closed by @a:hs: 👍 Yes" || j.TxnID != out.jobs[0].TxnID {
					t.Fatalf("close job %+v %+v", j, c)
				}
			}
		})
	}
}
