package polls

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// Polls are the poll actions.
var Polls = []actions.Spec{
	{Name: "send_poll", Help: "starts a poll (MSC3381, as Element and Element X show it)", New: func() actions.Request { return &SendPoll{} }},
	{Name: "end_poll", Help: "ends a poll the bridge started and returns its tally", New: func() actions.Request { return &EndPoll{} }},
}

// Limits of polls.
const (
	// MaxPollAnswers is how many answers a poll has at most (MSC3381 asks clients for 20).
	MaxPollAnswers   = 20
	maxPollTextBytes = 1000
)

// The kinds of poll (MSC3381).
const (
	pollDisclosed   = "org.matrix.msc3381.poll.disclosed"
	pollUndisclosed = "org.matrix.msc3381.poll.undisclosed"
)

// SendPoll is the `send_poll` action.
type SendPoll struct {
	actions.Common
	actions.To
	Question      string   `json:"question"`
	Answers       []string `json:"answers"`
	MaxSelections int      `json:"max_selections,omitempty"`
	// Kind is "disclosed" (votes shown while the poll runs, the default) or "undisclosed".
	Kind string `json:"kind,omitempty"`
}

// Validate checks the question and the answers.
func (r *SendPoll) Validate(t actions.Targets) *wire.Error {
	if err := r.To.Check(t); err != nil {
		return err
	}
	if strings.TrimSpace(r.Question) == "" {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'question' is required")
	}
	if len(r.Question) > maxPollTextBytes {
		return wire.Errorf(wire.CodeTooLarge, "field 'question' is longer than %d bytes", maxPollTextBytes)
	}
	if len(r.Answers) < 1 || len(r.Answers) > MaxPollAnswers {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'answers' must hold 1 to %d answers, not %d", MaxPollAnswers, len(r.Answers))
	}
	for i, a := range r.Answers {
		if strings.TrimSpace(a) == "" {
			return wire.Errorf(wire.CodeInvalidRequest, "field 'answers[%d]' is empty", i)
		}
		if len(a) > maxPollTextBytes {
			return wire.Errorf(wire.CodeTooLarge, "field 'answers[%d]' is longer than %d bytes", i, maxPollTextBytes)
		}
	}
	if r.MaxSelections < 0 || r.MaxSelections > len(r.Answers) {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'max_selections' must be between 1 and the number of answers (%d)", len(r.Answers))
	}
	switch r.Kind {
	case "", "disclosed", "undisclosed":
	default:
		return wire.Errorf(wire.CodeInvalidRequest, "field 'kind' must be disclosed or undisclosed, not %q", r.Kind)
	}
	return nil
}

// poll is the poll as stored; answer ids are "a1", "a2"….
func (r *SendPoll) poll() store.Poll {
	p := store.Poll{RequestID: r.ID, Question: r.Question, MaxSelections: max(r.MaxSelections, 1)}
	for i, a := range r.Answers {
		p.Answers = append(p.Answers, store.PollOption{ID: fmt.Sprintf("a%d", i+1), Text: a})
	}
	return p
}

// content is the org.matrix.msc3381.poll.start event, with a text fallback for clients without
// polls.
func (r *SendPoll) content(p store.Poll) *event.Content {
	kind := pollDisclosed
	if r.Kind == "undisclosed" {
		kind = pollUndisclosed
	}
	answers := make([]map[string]any, len(p.Answers))
	fallback := []string{p.Question}
	for i, a := range p.Answers {
		answers[i] = map[string]any{"id": a.ID, "org.matrix.msc1767.text": a.Text}
		fallback = append(fallback, fmt.Sprintf("%d. %s", i+1, a.Text))
	}
	return &event.Content{Raw: map[string]any{
		"org.matrix.msc3381.poll.start": map[string]any{
			"kind": kind, "max_selections": p.MaxSelections, "answers": answers,
			"question": map[string]any{"org.matrix.msc1767.text": p.Question, "body": p.Question, "msgtype": "m.text"},
		},
		"org.matrix.msc1767.text": strings.Join(fallback, "\n"),
		"m.mentions":              map[string]any{},
	}}
}

// Deliver starts the poll and remembers it for the tally.
func (r *SendPoll) Deliver(ctx context.Context, d *actions.Delivery) (any, error) {
	roomID, err := d.Room(ctx)
	if err != nil {
		return nil, err
	}
	p := r.poll()
	evtID, err := d.Matrix.Send(ctx, roomID, event.EventUnstablePollStart, r.content(p), d.TxnID)
	if err != nil {
		return nil, err
	}
	p.EventID, p.RoomID = evtID, roomID
	if err := d.Polls.SavePoll(ctx, p); err != nil {
		return nil, err
	}
	d.RecordSent(roomID, evtID, r.ID, false)
	return actions.SendResult{EventID: evtID, RoomID: roomID}, nil
}

// EndPoll is the `end_poll` action.
type EndPoll struct {
	actions.Common
	actions.To
	EventID id.EventID `json:"event_id"`
}

// Validate checks the poll's event ID.
func (r *EndPoll) Validate(t actions.Targets) *wire.Error {
	if err := r.To.Check(t); err != nil {
		return err
	}
	return actions.CheckEventID("event_id", r.EventID, true)
}

// Deliver ends the poll: the end event says the result, and no vote sent after it counts. The
// tally is published on `<base>/room/<key>/poll` when this end ended the poll.
func (r *EndPoll) Deliver(ctx context.Context, d *actions.Delivery) (any, error) {
	roomID, err := d.Room(ctx)
	if err != nil {
		return nil, err
	}
	p, ok, err := d.Polls.Poll(ctx, r.EventID)
	if err != nil {
		return nil, err
	}
	if !ok || p.RoomID != roomID {
		return nil, wire.Errorf(wire.CodeInvalidRequest, "'event_id': %s is not a poll the bridge started in this room (or it is older than 30 days)", r.EventID)
	}
	votes, err := d.Polls.Votes(ctx, p.EventID)
	if err != nil {
		return nil, err
	}
	// A poll that had ended before this request's first attempt (by end_poll or by a user in
	// their client) gets no second end event: the answer is its final tally. A retry of this
	// request, whose end may be out, goes on below and sends with the same transaction ID.
	var attempted bool
	if _, err := d.Progress.Load(&attempted); err != nil {
		return nil, err
	}
	if !attempted && !p.EndedAt.IsZero() {
		return TallyPoll(p, votes), nil
	}
	if err := d.Progress.Save(ctx, true); err != nil {
		return nil, err
	}
	content := &event.Content{Raw: map[string]any{
		"m.relates_to":                map[string]any{"rel_type": "m.reference", "event_id": p.EventID},
		"org.matrix.msc3381.poll.end": map[string]any{},
		"org.matrix.msc1767.text":     resultText(TallyPoll(p, votes)),
	}}
	endID, err := d.Matrix.Send(ctx, roomID, event.EventUnstablePollEnd, content, d.TxnID)
	if err != nil {
		return nil, err
	}
	// The poll ends when the homeserver says the end event was sent. If that cannot be read back
	// for good, it ends at the time of the request: the end event is out, so the poll must not
	// stay open here.
	at := time.UnixMilli(d.Now.UnixMilli())
	if sent, err := d.Matrix.GetEvent(ctx, roomID, endID); err != nil {
		if actions.Classify(err).Retry {
			return nil, err // the next attempt sends with the same transaction ID and reads it back
		}
		zerolog.Ctx(ctx).Warn().Err(err).Stringer("event_id", endID).Msg("Failed to read back the poll end; ending the poll at the time of the request")
	} else if end, ok := sent.Payload.(*wire.PollEnd); ok {
		at = time.UnixMilli(end.Timestamp)
	}
	if _, err := d.Polls.EndPoll(ctx, p.EventID, at); err != nil {
		return nil, err
	}
	// Read again: the earliest end counts (another user's, maybe), and votes after it are gone.
	if p, _, err = d.Polls.Poll(ctx, p.EventID); err != nil {
		return nil, err
	}
	if votes, err = d.Polls.Votes(ctx, p.EventID); err != nil {
		return nil, err
	}
	tally := TallyPoll(p, votes)
	if p.EndedAt.Equal(at) { // this end ended it (again when a retry gets here)
		payload, err := json.Marshal(tally)
		if err != nil {
			return nil, fmt.Errorf("failed to encode poll tally: %w", err)
		}
		if err := d.Publisher.Publish(ctx, d.Topics.Room(d.Targets.Key(roomID), wire.KindPoll), false, payload); err != nil {
			return nil, fmt.Errorf("failed to publish poll tally: %w", err)
		}
	}
	return tally, nil
}

// resultText is the end event's text: "The poll has ended. Top answer: Pizza (3 votes)".
func resultText(t wire.PollTally) string {
	if len(t.Winners) == 0 {
		return "The poll has ended. No votes."
	}
	var names []string
	votes := 0
	for _, a := range t.Answers {
		if slices.Contains(t.Winners, a.ID) {
			names = append(names, a.Text)
			votes = a.Votes
		}
	}
	return fmt.Sprintf("The poll has ended. Top answer: %s (%d votes)", strings.Join(names, ", "), votes)
}

// TallyPoll counts a poll's votes as MSC3381 says: each voter's latest response counts; a
// response naming an unknown answer, or none, is spoiled; at most max_selections answers of a
// response count (the first ones, each once).
func TallyPoll(p store.Poll, votes map[id.UserID][]string) wire.PollTally {
	t := wire.PollTally{EventID: p.EventID, RoomID: p.RoomID, RequestID: p.RequestID, Question: p.Question,
		Ended: !p.EndedAt.IsZero(), Winners: []string{}}
	index := map[string]int{}
	for i, a := range p.Answers {
		t.Answers = append(t.Answers, wire.PollAnswer{ID: a.ID, Text: a.Text})
		index[a.ID] = i
	}
	for _, answers := range votes {
		valid := len(answers) > 0
		for _, a := range answers {
			if _, ok := index[a]; !ok {
				valid = false
			}
		}
		if !valid {
			t.Spoiled++
			continue
		}
		t.Voters++
		var counted []string
		for _, a := range answers {
			if len(counted) == p.MaxSelections {
				break
			}
			if !slices.Contains(counted, a) {
				counted = append(counted, a)
				t.Answers[index[a]].Votes++
			}
		}
	}
	top := 0
	for _, a := range t.Answers {
		top = max(top, a.Votes)
	}
	for _, a := range t.Answers {
		if top > 0 && a.Votes == top {
			t.Winners = append(t.Winners, a.ID)
		}
	}
	return t
}
