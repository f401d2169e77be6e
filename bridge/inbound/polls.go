package inbound

import (
	"context"
	"reflect"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/polls"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// PollVotes records the votes of the polls the bridge started, and their end.
type PollVotes interface {
	Poll(ctx context.Context, evtID id.EventID) (store.Poll, bool, error)
	Votes(ctx context.Context, pollID id.EventID) (map[id.UserID][]string, error)
	Vote(ctx context.Context, pollID id.EventID, user id.UserID, answers []string, ts time.Time) (bool, error)
	EndPoll(ctx context.Context, pollID id.EventID, at time.Time) (bool, error)
}

// PowerLevels reads a room's power levels as the sync brought them (the Matrix client does).
type PowerLevels interface {
	SyncedPowerLevels(ctx context.Context, roomID id.RoomID) (*event.PowerLevelsEventContent, error)
}

// Polls is the filter that tallies the responses to the bridge's polls and publishes the tally
// on `<base>/room/<key>/poll` when it changes, and ends a poll at an end event from a user who
// may end it.
type Polls struct {
	store  PollVotes
	levels PowerLevels
}

// NewPolls prepares the poll filter.
func NewPolls(s PollVotes, levels PowerLevels) *Polls { return &Polls{store: s, levels: levels} }

// Inbound records a vote or an end and publishes the new tally.
func (f *Polls) Inbound(ctx context.Context, ev matrix.Event, key string, out *Output) {
	switch p := ev.Payload.(type) {
	case *wire.PollVote:
		f.vote(ctx, p, key, out)
	case *wire.PollEnd:
		f.end(ctx, p, key, out)
	}
}

// poll looks up the bridge's poll pollID in roomID.
func (f *Polls) poll(ctx context.Context, pollID id.EventID, roomID id.RoomID) (store.Poll, bool) {
	p, ok, err := f.store.Poll(ctx, pollID)
	if err != nil {
		zerolog.Ctx(ctx).Error().Err(err).Stringer("poll", pollID).Msg("Failed to look up a poll")
		return store.Poll{}, false
	}
	return p, ok && p.RoomID == roomID
}

func (f *Polls) vote(ctx context.Context, v *wire.PollVote, key string, out *Output) {
	log := zerolog.Ctx(ctx).With().Stringer("poll", v.Poll).Stringer("sender", v.Sender).Logger()
	p, ok := f.poll(ctx, v.Poll, v.RoomID)
	if !ok {
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

// end ends the poll at the end event's time when its sender may end it: MSC3381 lets the
// poll's creator and whoever may redact others' events end a poll. The bot's own end events
// never come here (end_poll publishes the tally of those), so the power to redact decides.
func (f *Polls) end(ctx context.Context, e *wire.PollEnd, key string, out *Output) {
	log := zerolog.Ctx(ctx).With().Stringer("poll", e.Poll).Stringer("sender", e.Sender).Logger()
	p, ok := f.poll(ctx, e.Poll, e.RoomID)
	if !ok {
		return
	}
	if !p.EndedAt.IsZero() && !time.UnixMilli(e.Timestamp).Before(p.EndedAt) {
		log.Info().Msg("Ignored the end of a poll that ended before")
		return
	}
	pl, err := f.levels.SyncedPowerLevels(ctx, e.RoomID)
	if err != nil {
		log.Error().Err(err).Msg("Failed to read the power levels for a poll's end")
		return
	}
	if pl.GetUserLevel(e.Sender) < pl.Redact() {
		log.Info().Int("level", pl.GetUserLevel(e.Sender)).Int("redact_level", pl.Redact()).
			Msg("Ignored the end of a poll from a user who may not redact others' events")
		return
	}
	p.EndedAt = time.UnixMilli(e.Timestamp)
	ended, err := f.store.EndPoll(ctx, p.EventID, p.EndedAt)
	if err != nil || !ended {
		if err != nil {
			log.Error().Err(err).Msg("Failed to end a poll")
		}
		return
	}
	votes, err := f.store.Votes(ctx, p.EventID)
	if err != nil {
		log.Error().Err(err).Msg("Failed to read a poll's votes")
		return
	}
	log.Info().Msg("Poll ended by a user")
	out.Publish(out.Topics().Room(key, wire.KindPoll), polls.TallyPoll(p, votes))
}
