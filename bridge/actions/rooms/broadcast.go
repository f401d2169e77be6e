package rooms

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/sendmedia"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// Broadcasts is the broadcast action, in a family of its own.
var Broadcasts = []actions.Spec{
	{Name: "broadcast", Help: "sends one message to many rooms (a list, a GROUPS name or \"*\"), one result per room",
		New: func() actions.Request { return &Broadcast{} }, LargePayload: true},
}

// BroadcastLane is the one lane of every broadcast: broadcasts keep their order among
// themselves and hold back no room's own lane (a send to one room may overtake a broadcast).
const BroadcastLane = "broadcast"

// MaxBroadcastTargets bounds the rooms of one broadcast, and so its stored progress.
const MaxBroadcastTargets = 1000

// BroadcastTo is broadcast's `to`: one target, group name or "*", or a list of targets.
type BroadcastTo struct {
	List []string
	// Single is set when `to` was a string (a target, group name or "*").
	Single bool
}

// UnmarshalJSON takes a string or a list of strings.
func (b *BroadcastTo) UnmarshalJSON(data []byte) error {
	var one string
	if err := json.Unmarshal(data, &one); err == nil {
		*b = BroadcastTo{List: []string{one}, Single: true}
		return nil
	}
	var list []string
	if err := json.Unmarshal(data, &list); err != nil {
		// encoding/json names the field: "field 'to' must be a list, not number".
		return &json.UnmarshalTypeError{Value: jsonValueKind(data), Type: reflect.TypeOf(list)}
	}
	*b = BroadcastTo{List: list}
	return nil
}

// jsonValueKind names the kind of a JSON value for an error.
func jsonValueKind(data []byte) string {
	switch {
	case len(data) == 0:
		return "nothing"
	case data[0] == '{':
		return "object"
	case data[0] == '[':
		return "list of other than strings"
	case data[0] == 't' || data[0] == 'f':
		return "bool"
	case data[0] == 'n':
		return "null"
	}
	return "number"
}

// MarshalJSON writes `to` as it was given.
func (b BroadcastTo) MarshalJSON() ([]byte, error) {
	if b.Single && len(b.List) == 1 {
		return json.Marshal(b.List[0])
	}
	return json.Marshal(b.List)
}

// Broadcast is the `broadcast` action.
type Broadcast struct {
	actions.Common
	To       BroadcastTo `json:"to"`
	Text     string      `json:"text,omitempty"`
	Markdown string      `json:"markdown,omitempty"`
	HTML     string      `json:"html,omitempty"`
	MsgType  string      `json:"msgtype,omitempty"`
	Mentions []string    `json:"mentions,omitempty"`
	// Media is a file to send instead of a text (broadcastmedia.go).
	Media *sendmedia.FileRequest `json:"media,omitempty"`
	// Spooled names the media's file kept for the outbox (set by Prepare, never from MQTT).
	Spooled string `json:"spooled,omitempty" wire:"own"`
}

// BroadcastResult is the outcome in one room.
type BroadcastResult struct {
	To      string      `json:"to"`
	RoomID  id.RoomID   `json:"room_id,omitempty"`
	EventID id.EventID  `json:"event_id,omitempty"`
	Error   *wire.Error `json:"error,omitempty"`
}

func (r BroadcastResult) done() bool { return r.EventID != "" || r.Error != nil }

// BroadcastData is the data of broadcast.
type BroadcastData struct {
	Sent    int               `json:"sent"`
	Failed  int               `json:"failed"`
	Results []BroadcastResult `json:"results"`
}

// broadcastProgress is what a broadcast has done: its targets, fixed on the first attempt
// ("*" becomes the rooms joined then), and the result of each finished one.
type broadcastProgress struct {
	Targets []string          `json:"targets"`
	Results []BroadcastResult `json:"results"`
	// Uploads are the media's uploads by mode (plain, encrypted).
	Uploads map[string]mediaUpload `json:"uploads,omitempty"`
	// Claims are the target that sends each room its one copy: the first to claim it, saved
	// before its send, so that no later attempt sends the room a copy under another target's
	// transaction ID (a copy's target learns its room, and keeps it in Results, too).
	Claims map[id.RoomID]int `json:"claims,omitempty"`
}

// Lane is the broadcast lane.
func (r *Broadcast) Lane() string { return BroadcastLane }

// Validate checks the targets (expanding a group) and the message: a text or a media file.
func (r *Broadcast) Validate(t actions.Targets) *wire.Error {
	if _, err := r.targets(t); err != nil {
		return err
	}
	if r.Media != nil {
		if r.Text != "" || r.Markdown != "" || r.HTML != "" || r.MsgType != "" {
			return wire.Errorf(wire.CodeInvalidRequest, "'media' goes without 'text', 'markdown', 'html' and 'msgtype': its caption is 'media.caption'")
		}
		if err := r.Media.CheckMentions(t, r.Mentions, "media."); err != nil {
			return err
		}
		return r.file().ValidateFile()
	}
	body := &actions.Send{Text: r.Text, Markdown: r.Markdown, HTML: r.HTML, MsgType: r.MsgType, Mentions: r.Mentions}
	return body.ValidateMessage(t)
}

// targets expands `to`: a group's members, "*" (when BROADCAST_ALL allows it) or the targets
// given, each checked and expanded, without repeats.
func (r *Broadcast) targets(t actions.Targets) ([]string, *wire.Error) {
	list := r.To.List
	if len(list) == 0 {
		return nil, wire.Errorf(wire.CodeInvalidRequest, `field 'to' is required: a list of targets, a group name from GROUPS, or "*"`)
	}
	if r.To.Single {
		if list[0] == "*" {
			if !t.BroadcastAll() {
				return nil, wire.Errorf(wire.CodeNotAllowed, `broadcast to "*" (every joined room) needs BROADCAST_ALL=true`)
			}
			return list, nil
		}
		if members, ok := t.Group(list[0]); ok {
			list = members
		}
	}
	if len(list) > MaxBroadcastTargets {
		return nil, wire.Errorf(wire.CodeTooLarge, "field 'to' names %d targets; at most %d", len(list), MaxBroadcastTargets)
	}
	out := make([]string, 0, len(list))
	for _, target := range list {
		if target == "*" {
			return nil, wire.Errorf(wire.CodeInvalidRequest, `field 'to': "*" stands alone, not in a list`)
		}
		expanded, err := t.Check("to", target)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, expanded) {
			out = append(out, expanded)
		}
	}
	return out, nil
}

// Deliver sends the message to each room not done yet, with a transaction ID per room, saving
// each room's result before the next. A room that fails for good gets its error and the others
// go on; one that may pass is tried again on the next attempt, after the others.
func (r *Broadcast) Deliver(ctx context.Context, d *actions.Delivery) (any, error) {
	var p broadcastProgress
	ok, err := d.Progress.Load(&p)
	if err != nil {
		return nil, err
	}
	if !ok {
		if p, err = r.start(ctx, d); err != nil {
			return nil, err
		}
		if err := d.Progress.Save(ctx, &p); err != nil {
			return nil, err
		}
	}
	var content any
	if r.Media == nil {
		content = (&actions.Send{Text: r.Text, Markdown: r.Markdown, HTML: r.HTML, MsgType: r.MsgType, Mentions: r.Mentions}).Content()
	}
	var file []byte // the media's file, loaded at most once per attempt
	var retry error
	if p.Claims == nil { // progress saved before claims were kept: the first target with a room
		p.Claims = make(map[id.RoomID]int, len(p.Targets))
		for i, res := range p.Results {
			if _, claimed := p.Claims[res.RoomID]; res.RoomID != "" && !claimed {
				p.Claims[res.RoomID] = i
			}
		}
	}
	owner := p.Claims
	for i, target := range p.Targets {
		if p.Results[i].done() {
			continue
		}
		res := &p.Results[i]
		save := func() error { return d.Progress.Save(ctx, &p) }
		evtID, err := r.sendOne(ctx, d, i, target, res, owner, save, func(roomID id.RoomID) (any, error) {
			if content != nil {
				return content, nil
			}
			return r.mediaContent(ctx, d, &p, roomID, &file)
		})
		if res.RoomID != "" && owner[res.RoomID] != i {
			continue // a copy: settled below, once its owner is done
		}
		if err != nil {
			out := actions.Classify(err)
			if !out.Retry {
				res.Error = out.Err
			} else if retry = err; res.RoomID == "" {
				continue
			}
		}
		res.EventID = evtID
		if err := save(); err != nil {
			return nil, err
		}
		if evtID != "" { // watched for reads now, not once the last room is done
			d.RecordSentNow(ctx, res.RoomID, evtID, r.ID)
		}
	}
	for i := range p.Results { // each target that names a room another target sent to
		res := &p.Results[i]
		if o, ok := owner[res.RoomID]; ok && o != i && !res.done() && p.Results[o].done() {
			res.EventID, res.Error = p.Results[o].EventID, p.Results[o].Error
		}
	}
	if retry != nil {
		return nil, retry
	}
	data := BroadcastData{Results: p.Results}
	for _, res := range p.Results {
		if res.Error != nil {
			data.Failed++
		} else {
			data.Sent++
			d.RecordSent(res.RoomID, res.EventID, r.ID, false) // recorded as it was sent, unless that failed
		}
	}
	return data, nil
}

// start fixes the targets of a first attempt.
func (r *Broadcast) start(ctx context.Context, d *actions.Delivery) (broadcastProgress, error) {
	targets, werr := r.targets(d.Targets)
	if werr != nil {
		return broadcastProgress{}, werr
	}
	if len(targets) == 1 && targets[0] == "*" {
		rooms, err := d.Matrix.Rooms(ctx)
		if err != nil {
			return broadcastProgress{}, err
		}
		targets = targets[:0]
		for _, room := range d.Targets.Annotate(rooms) { // without the rooms that were upgraded
			targets = append(targets, room.ID.String())
		}
	}
	p := broadcastProgress{Targets: targets, Results: make([]BroadcastResult, len(targets))}
	for i, target := range targets {
		p.Results[i].To = target
	}
	return p, nil
}

// sendOne sends target's room its copy, with target i's transaction ID, unless another target
// owns that room; rooms of "*" go through ALLOWED_TARGETS here. It records the room in res, and
// claims it in owner (saving the claim before the send).
func (r *Broadcast) sendOne(ctx context.Context, d *actions.Delivery, i int, target string, res *BroadcastResult,
	owner map[id.RoomID]int, save func() error, content func(id.RoomID) (any, error)) (id.EventID, error) {
	if res.RoomID == "" {
		if strings.HasPrefix(target, "!") {
			if _, werr := d.Targets.Check("to", target); werr != nil {
				return "", werr
			}
		}
		roomID, err := d.Resolve(ctx, target)
		if err != nil {
			return "", err
		}
		res.RoomID = roomID
	}
	if o, claimed := owner[res.RoomID]; claimed {
		if o != i {
			return "", nil
		}
	} else {
		owner[res.RoomID] = i
		if err := save(); err != nil {
			return "", err
		}
	}
	c, err := content(res.RoomID)
	if err != nil {
		return "", err
	}
	return d.Matrix.Send(ctx, res.RoomID, event.EventMessage, c, d.StepTxnID(i))
}
