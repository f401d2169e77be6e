package inbound

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/outbox"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// CallbackConfig is the configuration of answers to messages sent with `options`.
type CallbackConfig struct {
	// VerifiedOnly accepts answers only from devices cross-signed by their owner.
	VerifiedOnly bool `env:"CALLBACK_VERIFIED_ONLY"`
}

// OptionSets finds the options of a message and closes single_use ones.
type OptionSets interface {
	Options(ctx context.Context, evtID id.EventID) (store.OptionSet, bool, error)
	ClaimOptions(ctx context.Context, evtID, answerID id.EventID) (bool, error)
}

// Callbacks is the filter that turns an allowed user's reaction with one of a message's option
// keys into `<base>/room/<key>/callback`. Other reactions stay mere reactions.
type Callbacks struct {
	cfg  CallbackConfig
	sets OptionSets
}

// NewCallbacks prepares the callback filter.
func NewCallbacks(cfg CallbackConfig, sets OptionSets) *Callbacks {
	return &Callbacks{cfg: cfg, sets: sets}
}

// Inbound publishes the callback of an allowed answer, and queues the closing of a single_use
// message at its first answer.
func (f *Callbacks) Inbound(ctx context.Context, ev matrix.Event, key string, out *Output) {
	r, ok := ev.Payload.(*wire.Reaction)
	if !ok {
		return
	}
	log := zerolog.Ctx(ctx).With().Stringer("event_id", r.RelatesTo).Stringer("sender", r.Sender).Logger()
	set, ok, err := f.sets.Options(ctx, r.RelatesTo)
	if err != nil {
		log.Error().Err(err).Msg("Failed to look up the options of a reacted message")
		return
	}
	if !ok {
		return
	}
	i := slices.IndexFunc(set.Options, func(o wire.Option) bool { return o.Key == r.Key })
	switch {
	case i < 0:
		return
	case r.RoomID != set.RoomID:
		// A relation may name an event of any room: only the message's own room answers it.
		log.Warn().Stringer("room_id", r.RoomID).Str("reason", "reaction from another room").Msg("Ignored answer")
		return
	case len(set.Allowed) > 0 && !slices.Contains(set.Allowed, r.Sender):
		log.Info().Str("reason", "sender not in options_from").Msg("Ignored answer")
		return
	case f.cfg.VerifiedOnly && !r.SenderVerified:
		log.Info().Str("reason", "device not verified (CALLBACK_VERIFIED_ONLY)").Msg("Ignored answer")
		return
	}
	cb := &wire.Callback{
		EventID: set.EventID, RoomID: set.RoomID, RequestID: set.RequestID, Option: r.Key, Label: set.Options[i].Label,
		Sender: r.Sender, SenderName: r.SenderName, SenderVerified: r.SenderVerified, ReactionID: r.EventID, Timestamp: r.Timestamp,
	}
	if set.SingleUse {
		first, err := f.sets.ClaimOptions(ctx, set.EventID, r.EventID)
		if err != nil {
			log.Error().Err(err).Msg("Failed to close a single_use message")
			return
		}
		if !first {
			log.Info().Str("reason", "single_use message answered before").Msg("Ignored answer")
			return
		}
		out.Queue(closeJob(set, cb))
	}
	log.Info().Str("option", cb.Option).Msg("Accepted answer")
	out.Callback = cb
	out.Publish(out.Topics().Room(key, wire.KindCallback), cb)
}

// closeJob redacts the bot's reactions to a single_use message and edits it to say who chose
// what. Its transaction ID comes from the answer, so a batch handed over again after a crash
// does not close it twice.
func closeJob(set store.OptionSet, cb *wire.Callback) outbox.Job {
	who := cb.SenderName
	if who == "" {
		who = cb.Sender.String()
	}
	var reactions []id.EventID
	for _, o := range set.Options {
		if evtID := set.Reactions[o.Key]; evtID != "" {
			reactions = append(reactions, evtID)
		}
	}
	sum := sha256.Sum256([]byte(set.EventID.String() + "\x00" + cb.ReactionID.String()))
	return outbox.Job{
		Action: actions.ActionCloseOptions,
		Request: &actions.CloseOptions{RoomID: set.RoomID, EventID: set.EventID, Reactions: reactions,
			Body: set.Body, HTML: set.HTML, Content: json.RawMessage(set.Content), Closed: "✅ Closed by " + who + ": " + cb.Option + " " + cb.Label},
		TxnID: "m2mclose" + hex.EncodeToString(sum[:12]),
	}
}
