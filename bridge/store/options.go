package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// The matrix2mqtt_options table: messages sent with `options`, so that a reaction to one can be
// told to be an answer. Kept for OptionsRetention.

// OptionsRetention is how long a message's options are answerable.
const OptionsRetention = 30 * 24 * time.Hour

// OptionSet is a message sent with options.
type OptionSet struct {
	EventID   id.EventID
	RoomID    id.RoomID
	RequestID string
	Options   []wire.Option
	// Allowed are the users whose answers count; empty means every member but the bot.
	Allowed []id.UserID
	// Reactions are the bot's own reactions, by key.
	Reactions map[string]id.EventID
	SingleUse bool
	// Body and HTML are the message without its list of options; Content is that message as
	// JSON (its msgtype, file and info), empty for messages sent before schema v7.
	Body, HTML, Content string
	// AnsweredBy is the reaction that closed a single_use message.
	AnsweredBy id.EventID
}

// SaveOptions remembers (or updates) a message's options.
func (s *Store) SaveOptions(ctx context.Context, o OptionSet) error {
	options, err := json.Marshal(o.Options)
	if err != nil {
		return fmt.Errorf("failed to encode options: %w", err)
	}
	allowed, err := json.Marshal(orEmpty(o.Allowed))
	if err != nil {
		return fmt.Errorf("failed to encode options: %w", err)
	}
	reactions, err := json.Marshal(o.Reactions)
	if err != nil {
		return fmt.Errorf("failed to encode options: %w", err)
	}
	if o.Reactions == nil {
		reactions = []byte("{}")
	}
	defer s.lockWrites()()
	_, err = s.db.Exec(ctx, `INSERT INTO matrix2mqtt_options
		(event_id, room_id, request_id, options, allowed, reactions, single_use, body, html, content, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (event_id) DO UPDATE SET reactions=excluded.reactions`,
		o.EventID, o.RoomID, o.RequestID, string(options), string(allowed), string(reactions), o.SingleUse,
		o.Body, o.HTML, o.Content, s.clock.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to save options: %w", err)
	}
	return nil
}

func orEmpty(users []id.UserID) []id.UserID {
	if users == nil {
		return []id.UserID{}
	}
	return users
}

// Options returns the options of the message evtID; ok is false when it has none.
func (s *Store) Options(ctx context.Context, evtID id.EventID) (o OptionSet, ok bool, err error) {
	var options, allowed, reactions string
	err = s.db.QueryRow(ctx, `SELECT event_id, room_id, request_id, options, allowed, reactions, single_use,
		body, html, content, answered_by FROM matrix2mqtt_options WHERE event_id=$1`, evtID).
		Scan(&o.EventID, &o.RoomID, &o.RequestID, &options, &allowed, &reactions, &o.SingleUse, &o.Body, &o.HTML, &o.Content, &o.AnsweredBy)
	if errors.Is(err, sql.ErrNoRows) {
		return OptionSet{}, false, nil
	}
	if err != nil {
		return OptionSet{}, false, fmt.Errorf("failed to look up options: %w", err)
	}
	for _, f := range []struct {
		raw string
		v   any
	}{{options, &o.Options}, {allowed, &o.Allowed}, {reactions, &o.Reactions}} {
		if err := json.Unmarshal([]byte(f.raw), f.v); err != nil {
			return OptionSet{}, false, fmt.Errorf("failed to decode options: %w", err)
		}
	}
	return o, true, nil
}

// ClaimOptions closes a single_use message with the answer answerID; it reports false when
// another answer closed it before. Claiming again with the same answer (a sync batch handed
// over again after a crash) reports true.
func (s *Store) ClaimOptions(ctx context.Context, evtID, answerID id.EventID) (bool, error) {
	defer s.lockWrites()()
	res, err := s.db.Exec(ctx, `UPDATE matrix2mqtt_options SET answered_by=$2
		WHERE event_id=$1 AND (answered_by='' OR answered_by=$2)`, evtID, answerID)
	if err != nil {
		return false, fmt.Errorf("failed to close options: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("failed to close options: %w", err)
	}
	return n == 1, nil
}

func (s *Store) pruneOptions(ctx context.Context, before time.Time) error {
	if _, err := s.db.Exec(ctx, "DELETE FROM matrix2mqtt_options WHERE created_at < $1", before.UnixMilli()); err != nil {
		return fmt.Errorf("failed to prune options: %w", err)
	}
	return nil
}
