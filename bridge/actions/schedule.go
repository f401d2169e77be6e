package actions

import (
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// PastTolerance is how far in the past `at` may be (clocks differ a little): such a message
// goes out at once; earlier is an error.
const PastTolerance = time.Minute

// Timed is a durable request that waits for a time of its own (`at`, `delay_s`).
type Timed interface {
	// Due is when the request, received at received, is to be delivered; a time not after
	// received means at once.
	Due(received time.Time) (time.Time, *wire.Error)
}

// Schedule are the fields of `send` that make it wait in the outbox until a time.
type Schedule struct {
	// At is the time to send, RFC 3339 (2025-01-01T07:00:00+01:00).
	At string `json:"at,omitempty"`
	// DelayS is how many seconds after receipt to send.
	DelayS float64 `json:"delay_s,omitempty"`
}

func (s Schedule) validate() *wire.Error {
	if s.At != "" && s.DelayS != 0 {
		return wire.Errorf(wire.CodeInvalidRequest, "fields 'at' and 'delay_s' cannot be combined")
	}
	if s.At != "" {
		if _, err := time.Parse(time.RFC3339, s.At); err != nil {
			return wire.Errorf(wire.CodeInvalidRequest, "field 'at' must be an RFC 3339 time such as 2025-01-01T07:00:00+01:00, not %q", s.At)
		}
	}
	return checkDelay("delay_s", s.DelayS)
}

// Due is the time of `at` or `delay_s`; `at` more than PastTolerance in the past, or more than a
// year ahead, is refused.
func (s Schedule) Due(received time.Time) (time.Time, *wire.Error) {
	if s.At == "" {
		return received.Add(seconds(s.DelayS)), nil
	}
	at, err := time.Parse(time.RFC3339, s.At)
	if err != nil {
		return time.Time{}, wire.Errorf(wire.CodeInvalidRequest, "field 'at' must be an RFC 3339 time, not %q", s.At)
	}
	if at.Before(received.Add(-PastTolerance)) {
		return time.Time{}, wire.Errorf(wire.CodeInvalidRequest, "field 'at' (%s) is %s in the past", s.At, received.Sub(at).Round(time.Second))
	}
	if at.After(received.Add(MaxDelayS * time.Second)) {
		return time.Time{}, wire.Errorf(wire.CodeInvalidRequest, "field 'at' (%s) is more than a year ahead", s.At)
	}
	return at, nil
}
