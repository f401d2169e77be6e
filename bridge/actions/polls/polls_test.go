package polls_test

import (
	"fmt"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/catalog"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/polls"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// pollTargets has the friendly names the cases use.
var pollTargets = targets.New(targets.Config{Names: targets.Names{"k": "!k:hs", "bob": "@bob:hs"}})

func TestParsePolls(t *testing.T) {
	answers := func(n int) string { return `["` + strings.TrimSuffix(strings.Repeat(`x","`, n), `","`) + `"]` }
	tests := []struct {
		name, action, payload string
		code                  string // empty: valid
		mention               string
	}{
		{"poll", "send_poll", `{"to":"k","question":"Dinner?","answers":["Pizza","Pasta"],"max_selections":2,"kind":"undisclosed"}`, "", ""},
		{"twenty answers", "send_poll", `{"to":"k","question":"?","answers":` + answers(20) + `}`, "", ""},
		{"21 answers", "send_poll", `{"to":"k","question":"?","answers":` + answers(21) + `}`, wire.CodeInvalidRequest, "1 to 20"},
		{"no answers", "send_poll", `{"to":"k","question":"?","answers":[]}`, wire.CodeInvalidRequest, "1 to 20"},
		{"empty answer", "send_poll", `{"to":"k","question":"?","answers":["a"," "]}`, wire.CodeInvalidRequest, "'answers[1]'"},
		{"no question", "send_poll", `{"to":"k","answers":["a"]}`, wire.CodeInvalidRequest, "'question'"},
		{"max_selections over the answers", "send_poll", `{"to":"k","question":"?","answers":["a","b"],"max_selections":3}`, wire.CodeInvalidRequest, "'max_selections'"},
		{"bad kind", "send_poll", `{"to":"k","question":"?","answers":["a"],"kind":"secret"}`, wire.CodeInvalidRequest, "'kind'"},
		{"end_poll", "end_poll", `{"to":"k","event_id":"$p"}`, "", ""},
		{"end_poll without event", "end_poll", `{"to":"k"}`, wire.CodeInvalidRequest, "'event_id'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := catalog.Default().Parse(tc.action, "", []byte(tc.payload), pollTargets)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || err.Code != tc.code || !strings.Contains(err.Message, tc.mention) {
				t.Fatalf("error = %v, want %s mentioning %q", err, tc.code, tc.mention)
			}
		})
	}
}

func TestTallyPoll(t *testing.T) {
	poll := store.Poll{EventID: "$p", Question: "?", MaxSelections: 1,
		Answers: []store.PollOption{{ID: "a1", Text: "A"}, {ID: "a2", Text: "B"}, {ID: "a3", Text: "C"}}}
	two := poll
	two.MaxSelections = 2
	tests := []struct {
		name    string
		poll    store.Poll
		votes   map[id.UserID][]string
		want    string // votes per answer
		voters  int
		spoiled int
		winners string
	}{
		{"no votes", poll, nil, "0 0 0", 0, 0, "[]"},
		{"one each", poll, map[id.UserID][]string{"@a": {"a1"}, "@b": {"a2"}, "@c": {"a1"}}, "2 1 0", 3, 0, "[a1]"},
		{"unknown answer spoils", poll, map[id.UserID][]string{"@a": {"a1"}, "@b": {"a2", "zz"}}, "1 0 0", 1, 1, "[a1]"},
		{"no answer spoils", poll, map[id.UserID][]string{"@a": {}}, "0 0 0", 0, 1, "[]"},
		{"first max_selections count", poll, map[id.UserID][]string{"@a": {"a2", "a3"}}, "0 1 0", 1, 0, "[a2]"},
		{"two selections, each once", two, map[id.UserID][]string{"@a": {"a2", "a2", "a3"}}, "0 1 1", 1, 0, "[a2 a3]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := polls.TallyPoll(tc.poll, tc.votes)
			var votes []string
			for _, a := range got.Answers {
				votes = append(votes, fmt.Sprint(a.Votes))
			}
			if strings.Join(votes, " ") != tc.want || got.Voters != tc.voters || got.Spoiled != tc.spoiled || fmt.Sprint(got.Winners) != tc.winners || got.Ended {
				t.Fatalf("tally %+v", got)
			}
		})
	}
	poll.EndedAt = time.Now()
	if !polls.TallyPoll(poll, nil).Ended {
		t.Fatal("an ended poll is not shown ended")
	}
}
