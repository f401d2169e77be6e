package wire

import "maunium.net/go/mautrix/id"

// KindPoll carries the tally of a poll the bridge started, when it changes.
const KindPoll Kind = "poll"

// PollVote is a poll response from another user (MSC3381). It is not published on its own:
// it changes the tally on `<base>/room/<key>/poll`.
type PollVote struct {
	EventID   id.EventID `json:"event_id"`
	RoomID    id.RoomID  `json:"room_id"`
	Sender    id.UserID  `json:"sender"`
	Poll      id.EventID `json:"poll"`
	Answers   []string   `json:"answers"`
	Timestamp int64      `json:"ts"`
}

// PollEnd is the end of a poll (MSC3381), never published itself: from another user, the poll
// filter ends a poll the bridge started with it when its sender may; end_poll reads its own
// back (get_event) for the time the poll ended.
type PollEnd struct {
	EventID   id.EventID `json:"event_id"`
	RoomID    id.RoomID  `json:"room_id"`
	Sender    id.UserID  `json:"sender"`
	Poll      id.EventID `json:"poll"`
	Timestamp int64      `json:"ts"`
}

// PollAnswer is one answer of a poll with its votes.
type PollAnswer struct {
	ID    string `json:"id"`
	Text  string `json:"text"`
	Votes int    `json:"votes"`
}

// PollTally is the payload of `<base>/room/<key>/poll` and the data of `end_poll`.
type PollTally struct {
	EventID   id.EventID   `json:"event_id"`
	RoomID    id.RoomID    `json:"room_id"`
	RequestID string       `json:"request_id,omitempty"`
	Question  string       `json:"question"`
	Answers   []PollAnswer `json:"answers"`
	// Voters counts the users whose latest response counts; Spoiled those whose latest response
	// named an unknown answer or none.
	Voters  int  `json:"voters"`
	Spoiled int  `json:"spoiled"`
	Ended   bool `json:"ended"`
	// Winners are the answers with the most votes (none without votes).
	Winners []string `json:"winners"`
}
