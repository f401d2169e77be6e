package mqtt

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidSegment is returned for a topic segment that is empty or contains a character MQTT
// reserves (`#`, `+`, `/`) or a NUL.
var ErrInvalidSegment = errors.New("invalid topic segment")

// ValidateSegment checks that s can stand as one level of a topic name.
func ValidateSegment(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty", ErrInvalidSegment)
	}
	if i := strings.IndexAny(s, "#+/\x00"); i >= 0 {
		return fmt.Errorf("%w: %q contains %q", ErrInvalidSegment, s, s[i])
	}
	return nil
}

// SafeSegment turns s into a valid topic segment by replacing the reserved characters with `_`.
func SafeSegment(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '#', '+', '/', 0:
			return '_'
		}
		return r
	}, s)
}

// Match reports whether topic matches filter, with MQTT's wildcards: `+` for one level, `#` for
// any number of levels at the end.
func Match(filter, topic string) bool {
	fs, ts := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fs {
		switch {
		case f == "#":
			return true
		case i >= len(ts):
			return false
		case f != "+" && f != ts[i]:
			return false
		}
	}
	return len(fs) == len(ts)
}
