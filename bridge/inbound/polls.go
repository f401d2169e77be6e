package inbound

import (
	"context"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/polls"
	"reflect"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// PollVotes records the votes of the polls the bridge started.
type PollVotes interface {
	Poll(ctx context.Context, evtID id.EventID) (store.Poll, bool, error)
	Votes(ctx context.Context, pollID id.EventID) (map[id.UserID][]string, error)
	Vote(ctx context.Context, pollID id.EventID, user id.UserID, answers []string, ts time.Time) (bool, error)
}

// Polls is the filter that tallies the responses to the bridge's polls and publishes the tally
// on `<base>/room/<key>/poll` when it changes.
type Polls struct {
	store PollVotes
}

// NewPolls prepares the poll filter.
func NewPolls(s PollVotes) *Polls { return &Polls{store: s} }

// Inbound records a vote and publishes the new tally.
func (f *Polls) Inbound(ctx context.Context, ev matrix.Event, key string, out *Output) {
	v, ok := ev.Payload.(*wire.PollVote)
	if !ok {
		return
	}
	log := zerolog.Ctx(ctx).With().Stringer("poll", v.Poll).Stringer("sender", v.Sender).Logger()
	p, ok, err := f.store.Poll(ctx, v.Poll)
	if err != nil || !ok || p.RoomID != v.RoomID {
		if err != nil {
			log.Error().Err(err).Msg("Failed to look up a poll")
		}
		return
	}
	before, err := f.store.Votes(ctx, p.EventID)
	if err != nil {
		log.Error().Err(err).Msg("Failed to read a poll's votes")
		return
	}
	recorded, err := f.store.Vote(ctx, p.EventID, v.Sender, v.Answers, time.UnixMilli(v.Timestamp))
	if err != nil {
		log.Error().Err(err).Msg("Failed to record a vote")
		return
	}
	if !recorded {
		log.Info().Msg("Ignored a vote after the poll's end or older than the voter's last")
		return
	}
	after, err := f.store.Votes(ctx, p.EventID)
	if err != nil {
		log.Error().Err(err).Msg("Failed to read a poll's votes")
		return
	}
	old, tally := polls.TallyPoll(p, before), polls.TallyPoll(p, after)
	if reflect.DeepEqual(old, tally) {
		return
	}
	out.Publish(out.Topics().Room(key, wire.KindPoll), tally)
}
