package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix/id"
)

// The matrix2mqtt_polls and matrix2mqtt_poll_votes tables: the polls the bridge started and
// the latest response of each voter. Kept for OptionsRetention.

// PollOption is one answer of a poll.
type PollOption struct {
	ID   string `json:"id"`
	Text string `json:"text"`
}

// Poll is a poll the bridge started.
type Poll struct {
	EventID       id.EventID
	RoomID        id.RoomID
	RequestID     string
	Question      string
	Answers       []PollOption
	MaxSelections int
	// EndedAt is when its first valid end event was sent (by end_poll or a user with the
	// power to redact others); zero while it is open.
	EndedAt time.Time
}

// SavePoll remembers a poll.
func (s *Store) SavePoll(ctx context.Context, p Poll) error {
	answers, err := json.Marshal(p.Answers)
	if err != nil {
		return fmt.Errorf("failed to encode poll: %w", err)
	}
	defer s.lockWrites()()
	_, err = s.db.Exec(ctx, `INSERT INTO matrix2mqtt_polls (event_id, room_id, request_id, question, answers, max_selections, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING`,
		p.EventID, p.RoomID, p.RequestID, p.Question, string(answers), p.MaxSelections, s.clock.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to save poll: %w", err)
	}
	return nil
}

// Poll returns the poll evtID; ok is false when the bridge did not start it.
func (s *Store) Poll(ctx context.Context, evtID id.EventID) (p Poll, ok bool, err error) {
	var answers string
	var endedAt int64
	err = s.db.QueryRow(ctx, `SELECT event_id, room_id, request_id, question, answers, max_selections, ended_at
		FROM matrix2mqtt_polls WHERE event_id=$1`, evtID).
		Scan(&p.EventID, &p.RoomID, &p.RequestID, &p.Question, &answers, &p.MaxSelections, &endedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Poll{}, false, nil
	}
	if err != nil {
		return Poll{}, false, fmt.Errorf("failed to look up poll: %w", err)
	}
	if err := json.Unmarshal([]byte(answers), &p.Answers); err != nil {
		return Poll{}, false, fmt.Errorf("failed to decode poll: %w", err)
	}
	p.EndedAt = fromMillis(endedAt)
	return p, true, nil
}

// Vote records user's response to a poll at ts unless a later one of theirs is recorded or the
// poll ended before ts; it reports whether it was recorded.
func (s *Store) Vote(ctx context.Context, pollID id.EventID, user id.UserID, answers []string, ts time.Time) (bool, error) {
	raw, err := json.Marshal(answers)
	if err != nil {
		return false, fmt.Errorf("failed to encode vote: %w", err)
	}
	if answers == nil {
		raw = []byte("[]")
	}
	defer s.lockWrites()()
	res, err := s.db.Exec(ctx, `INSERT INTO matrix2mqtt_poll_votes (poll_id, user_id, answers, ts)
		SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM matrix2mqtt_polls WHERE event_id=$1 AND (ended_at=0 OR ended_at >= $4))
		ON CONFLICT (poll_id, user_id) DO UPDATE SET answers=excluded.answers, ts=excluded.ts
		WHERE matrix2mqtt_poll_votes.ts <= excluded.ts`, pollID, user, string(raw), ts.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("failed to record vote: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("failed to record vote: %w", err)
	}
	return n == 1, nil
}

// Votes returns the latest response of each voter.
func (s *Store) Votes(ctx context.Context, pollID id.EventID) (map[id.UserID][]string, error) {
	rows, err := s.db.Query(ctx, "SELECT user_id, answers FROM matrix2mqtt_poll_votes WHERE poll_id=$1", pollID)
	if err != nil {
		return nil, fmt.Errorf("failed to read votes: %w", err)
	}
	defer rows.Close()
	out := map[id.UserID][]string{}
	for rows.Next() {
		var user id.UserID
		var raw string
		if err := rows.Scan(&user, &raw); err != nil {
			return nil, fmt.Errorf("failed to read votes: %w", err)
		}
		var answers []string
		if err := json.Unmarshal([]byte(raw), &answers); err != nil {
			return nil, fmt.Errorf("failed to decode a vote: %w", err)
		}
		out[user] = answers
	}
	return out, rows.Err()
}

// EndPoll marks the poll ended at at unless it had ended at or before at (the earliest end counts,
// though it may be learned second: end_poll learns its end event's time once it was sent, while a
// user's end may be handled meanwhile); it reports whether at is now the poll's end. A vote
// recorded with a later time no longer counts: the end came before it in the timeline.
func (s *Store) EndPoll(ctx context.Context, pollID id.EventID, at time.Time) (ended bool, err error) {
	defer s.lockWrites()()
	err = s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		res, err := s.db.Exec(ctx, "UPDATE matrix2mqtt_polls SET ended_at=$2 WHERE event_id=$1 AND (ended_at=0 OR ended_at>$2)", pollID, at.UnixMilli())
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		ended = true
		_, err = s.db.Exec(ctx, "DELETE FROM matrix2mqtt_poll_votes WHERE poll_id=$1 AND ts > $2", pollID, at.UnixMilli())
		return err
	})
	if err != nil {
		return false, fmt.Errorf("failed to end poll: %w", err)
	}
	return ended, nil
}

func (s *Store) prunePolls(ctx context.Context, before time.Time) error {
	_, err := s.db.Exec(ctx, `DELETE FROM matrix2mqtt_poll_votes WHERE poll_id IN
		(SELECT event_id FROM matrix2mqtt_polls WHERE created_at < $1)`, before.UnixMilli())
	if err == nil {
		_, err = s.db.Exec(ctx, "DELETE FROM matrix2mqtt_polls WHERE created_at < $1", before.UnixMilli())
	}
	if err != nil {
		return fmt.Errorf("failed to prune polls: %w", err)
	}
	return nil
}
