package actions

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// Messages are the actions that put events into rooms.
var Messages = []Spec{
	{Name: "send", Help: "sends a text, Markdown or HTML message (notice, emote, reply, thread, edit, mentions)",
		New: func() Request { return &Send{} }, Shortcut: sendShortcut},
	{Name: "send_location", Help: "sends a location pin", New: func() Request { return &SendLocation{} }},
	{Name: "react", Help: "reacts to an event", New: func() Request { return &React{} }},
	{Name: "redact", Help: "redacts (deletes) an event", New: func() Request { return &Redact{} }},
	{Name: "typing", Help: "shows or stops the typing notification", New: func() Request { return &Typing{} }},
	{Name: "read_receipt", Help: "marks an event as read", New: func() Request { return &ReadReceipt{} }},
}

// MaxBodyBytes keeps a message's text well inside Matrix's 64 KiB event limit.
const MaxBodyBytes = 60000

// MaxDelayS bounds expire_s and redact_after_s: a year.
const MaxDelayS = 365 * 24 * 3600

// Timing are the fields of durable messages that bound when they go out and how long they stay.
type Timing struct {
	// ExpireS drops the message with an `expired` error instead of delivering it later than this
	// many seconds after it was received.
	ExpireS float64 `json:"expire_s,omitempty"`
	// RedactAfterS redacts the message this many seconds after it was sent.
	RedactAfterS float64 `json:"redact_after_s,omitempty"`
}

func (t Timing) Validate() *wire.Error {
	if err := checkDelay("expire_s", t.ExpireS); err != nil {
		return err
	}
	return checkDelay("redact_after_s", t.RedactAfterS)
}

// checkDelay bounds a delay in seconds: a larger one would overflow time.Duration.
func checkDelay(field string, v float64) *wire.Error {
	if v < 0 || math.IsNaN(v) {
		return wire.Errorf(wire.CodeInvalidRequest, "field '%s' must not be negative", field)
	}
	if v > MaxDelayS {
		return wire.Errorf(wire.CodeInvalidRequest, "field '%s' must be at most %d (a year)", field, MaxDelayS)
	}
	return nil
}

// ExpireAfter is the request's own deadline.
func (t Timing) ExpireAfter() time.Duration { return seconds(t.ExpireS) }

// scheduleRedaction schedules the redaction of evtID after RedactAfterS.
func (t Timing) scheduleRedaction(d *Delivery, roomID id.RoomID, evtID id.EventID) {
	if t.RedactAfterS <= 0 {
		return
	}
	d.Schedule(FollowUp{
		Action: ActionAutoRedact, Lane: "redact_after/" + evtID.String(),
		Request:   &AutoRedact{RoomID: roomID, EventID: evtID},
		NotBefore: d.Now.Add(seconds(t.RedactAfterS)),
	})
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// To is the `to` field of requests that act in one room.
type To struct {
	To     string `json:"to"`
	target string
}

func (t *To) Check(targets Targets) (err *wire.Error) {
	t.target, err = targets.Check("to", t.To)
	return err
}

// Lane is the expanded target.
func (t *To) Lane() string { return t.target }

// SendResult is the data of a successful send, react or redact.
type SendResult struct {
	EventID id.EventID `json:"event_id"`
	RoomID  id.RoomID  `json:"room_id"`
}

// Send is the `send` action.
type Send struct {
	Common
	To
	Text     string     `json:"text,omitempty"`
	Markdown string     `json:"markdown,omitempty"`
	HTML     string     `json:"html,omitempty"`
	MsgType  string     `json:"msgtype,omitempty"`
	ReplyTo  id.EventID `json:"reply_to,omitempty"`
	Thread   id.EventID `json:"thread,omitempty"`
	Edit     id.EventID `json:"edit,omitempty"`
	Mentions []string   `json:"mentions,omitempty"`
	Timing
	Choices
	Live
	Schedule
}

// sendShortcut takes `<base>/send/<target>`: plain text, or a JSON send request.
func sendShortcut(target string, payload []byte) (Request, *wire.Error) {
	send := &Send{}
	if isJSONObject(payload) {
		if err := wire.Decode(payload, send); err != nil {
			return nil, err
		}
		if send.To.To != "" && send.To.To != target {
			return nil, wire.Errorf(wire.CodeInvalidRequest, "field 'to' (%q) contradicts the topic's target %q", send.To.To, target)
		}
	} else {
		if !utf8.Valid(payload) {
			return nil, wire.Errorf(wire.CodeInvalidRequest, "the payload is not UTF-8")
		}
		send.Text = string(payload)
	}
	send.To.To = target
	return send, nil
}

// Validate checks the message.
func (r *Send) Validate(t Targets) *wire.Error {
	if err := r.To.Check(t); err != nil {
		return err
	}
	if err := r.ValidateMessage(t); err != nil {
		return err
	}
	return r.Choices.Validate(t)
}

// ValidateMessage checks every field but `to` (broadcast checks its own targets).
func (r *Send) ValidateMessage(t Targets) *wire.Error {
	if CountGiven(r.Text, r.Markdown, r.HTML) != 1 {
		return wire.Errorf(wire.CodeInvalidRequest, "exactly one of 'text', 'markdown' or 'html' is required")
	}
	if n := len(r.Text) + len(r.Markdown) + len(r.HTML); n > MaxBodyBytes {
		return wire.Errorf(wire.CodeTooLarge, "the message is %d bytes; at most %d fit in a Matrix event", n, MaxBodyBytes)
	}
	switch strings.TrimPrefix(r.MsgType, "m.") {
	case "", "text", "notice", "emote":
	default:
		return wire.Errorf(wire.CodeInvalidRequest, "field 'msgtype' must be text, notice or emote, not %q", r.MsgType)
	}
	edit := r.Edit
	if edit == EditLast {
		edit = ""
	}
	if err := CheckEventIDs([]EventField{{"reply_to", r.ReplyTo}, {"thread", r.Thread}, {"edit", edit}}); err != nil {
		return err
	}
	if r.Edit != "" && (r.ReplyTo != "" || r.Thread != "") {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'edit' cannot be combined with 'reply_to' or 'thread': an edit keeps the original's relations")
	}
	if err := CheckMentions(t, r.Mentions, Markup{"markdown", r.Markdown, true}, Markup{"html", r.HTML, false}); err != nil {
		return err
	}
	if len(r.Options) > 0 && (r.Edit != "" || r.Tag != "") {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'options' cannot be combined with 'edit' or 'tag'")
	}
	if r.Tag != "" && r.Edit != "" {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'tag' cannot be combined with 'edit': the tag picks the message to edit")
	}
	if err := r.Live.validate(); err != nil {
		return err
	}
	if err := r.Schedule.validate(); err != nil {
		return err
	}
	return r.Timing.Validate()
}

// Deliver sends the message, and schedules its redaction when asked.
func (r *Send) Deliver(ctx context.Context, d *Delivery) (any, error) {
	if len(r.Options) > 0 {
		return r.sendWithOptions(ctx, d)
	}
	return r.sendLive(ctx, d)
}

// SendMessage sends an m.room.message to the delivery's room, and schedules its redaction
// when asked.
func (t Timing) SendMessage(ctx context.Context, d *Delivery, content any, requestID string) (any, error) {
	roomID, err := d.Room(ctx)
	if err != nil {
		return nil, err
	}
	evtID, err := d.Matrix.Send(ctx, roomID, event.EventMessage, content, d.TxnID)
	if err != nil {
		return nil, err
	}
	d.RecordSent(roomID, evtID, requestID, false)
	t.scheduleRedaction(d, roomID, evtID)
	return SendResult{EventID: evtID, RoomID: roomID}, nil
}

// Content builds the m.room.message content.
func (r *Send) Content() *event.MessageEventContent {
	content := RenderText(r.Markdown, r.HTML, r.Text)
	content.MsgType = event.MsgText
	switch strings.TrimPrefix(r.MsgType, "m.") {
	case "notice":
		content.MsgType = event.MsgNotice
	case "emote":
		content.MsgType = event.MsgEmote
	}
	content.Mentions = WithMentions(content.Mentions, r.Mentions)
	if r.Edit != "" && r.Edit != EditLast {
		content.SetEdit(r.Edit)
	} else if r.Edit == "" {
		content.RelatesTo = ReplyOrThread(r.ReplyTo, r.Thread)
	}
	return &content
}

// Markup is a message's Markdown or HTML field, whose pills (links to users) mention them.
type Markup struct {
	Field    string
	Text     string
	Markdown bool
}

// CountGiven counts the values that are not empty: the fields of a one-of group that were given.
func CountGiven(values ...string) int {
	n := 0
	for _, v := range values {
		if v != "" {
			n++
		}
	}
	return n
}

// CheckMentions checks a `mentions` field (user IDs, or "@room") and the users it and the pills
// of the markup mention against ALLOWED_TARGETS: a mention notifies a user, so it names one as
// much as `to` does. "@room" notifies the members of a room the request may already write to.
func CheckMentions(t Targets, list []string, markup ...Markup) *wire.Error {
	for _, m := range list {
		if m == "@room" {
			continue
		}
		if _, _, err := id.UserID(m).ParseAndValidateRelaxed(); err != nil || !strings.HasPrefix(m, "@") {
			return wire.Errorf(wire.CodeInvalidRequest, "field 'mentions' must hold user IDs or \"@room\", not %q", m)
		}
		if _, err := t.CheckUser("mentions", m); err != nil {
			return err
		}
	}
	for _, m := range markup {
		for _, user := range pills(m) {
			if _, err := t.CheckUser(m.Field, user.String()); err != nil {
				return wire.Errorf(err.Code, "a pill in %s", err.Message)
			}
		}
	}
	return nil
}

// RenderText is a message's content from the first given of its Markdown, HTML or plain text:
// the body, the HTML, and the users its pills link to as m.mentions.
func RenderText(markdown, html, text string) event.MessageEventContent {
	switch {
	case markdown != "":
		return format.RenderMarkdown(markdown, true, true)
	case html != "":
		return format.HTMLToContent(html)
	}
	return event.MessageEventContent{Body: text}
}

// pills are the users that m links to, found as RenderText finds them when the message is built
// (a link written with HTML entities included).
func pills(m Markup) []id.UserID {
	content := RenderText("", m.Text, "")
	if m.Markdown {
		content = RenderText(m.Text, "", "")
	}
	if content.Mentions == nil {
		return nil
	}
	return content.Mentions.UserIDs
}

// WithMentions is the m.mentions of a message: the pills in the text (found by the format package)
// and the explicit mentions. It is always present, so clients do not guess mentions from the
// body.
func WithMentions(found *event.Mentions, explicit []string) *event.Mentions {
	if found == nil {
		found = &event.Mentions{}
	}
	for _, m := range explicit {
		if m == "@room" {
			found.Room = true
		} else if !slices.Contains(found.UserIDs, id.UserID(m)) {
			found.UserIDs = append(found.UserIDs, id.UserID(m))
		}
	}
	return found
}

// ReplyOrThread relates a message to replyTo and/or puts it into the thread of root (with the
// reply fallback that clients without threads show); nil when both are empty.
func ReplyOrThread(replyTo, root id.EventID) *event.RelatesTo {
	switch {
	case root != "":
		rel := &event.RelatesTo{}
		if replyTo != "" {
			rel.SetReplyTo(replyTo)
		}
		return rel.SetThread(root, root)
	case replyTo != "":
		return (&event.RelatesTo{}).SetReplyTo(replyTo)
	}
	return nil
}

// SendLocation is the `send_location` action.
type SendLocation struct {
	Common
	To
	Lat         *float64   `json:"lat"`
	Lon         *float64   `json:"lon"`
	Description string     `json:"description,omitempty"`
	ReplyTo     id.EventID `json:"reply_to,omitempty"`
	Thread      id.EventID `json:"thread,omitempty"`
	Timing
}

// Validate checks the coordinates.
func (r *SendLocation) Validate(t Targets) *wire.Error {
	if err := r.To.Check(t); err != nil {
		return err
	}
	if r.Lat == nil || r.Lon == nil {
		return wire.Errorf(wire.CodeInvalidRequest, "fields 'lat' and 'lon' are required (degrees, WGS 84)")
	}
	if *r.Lat < -90 || *r.Lat > 90 {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'lat' must be between -90 and 90, not %v", *r.Lat)
	}
	if *r.Lon < -180 || *r.Lon > 180 {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'lon' must be between -180 and 180, not %v", *r.Lon)
	}
	// The description goes into the event three times (body, text fallback, location).
	if len(r.Description) > MaxBodyBytes/4 {
		return wire.Errorf(wire.CodeTooLarge, "field 'description' is %d bytes; at most %d fit in a Matrix event", len(r.Description), MaxBodyBytes/4)
	}
	if err := CheckEventIDs([]EventField{{"reply_to", r.ReplyTo}, {"thread", r.Thread}}); err != nil {
		return err
	}
	return r.Timing.Validate()
}

// Deliver sends the pin, and schedules its redaction when asked.
func (r *SendLocation) Deliver(ctx context.Context, d *Delivery) (any, error) {
	return r.Timing.SendMessage(ctx, d, r.Content(), r.ID)
}

// content is an m.location message as Element sends a pinned location: geo_uri for every
// client, and the extensible-event fields (MSC3488) that newer clients draw a map from.
func (r *SendLocation) Content() *event.Content {
	geo := fmt.Sprintf("geo:%s,%s", strconv.FormatFloat(*r.Lat, 'f', -1, 64), strconv.FormatFloat(*r.Lon, 'f', -1, 64))
	body := "Location " + geo
	if r.Description != "" {
		body = r.Description + " (" + geo + ")"
	}
	msg := &event.MessageEventContent{MsgType: event.MsgLocation, Body: body, GeoURI: geo,
		Mentions: &event.Mentions{}, RelatesTo: ReplyOrThread(r.ReplyTo, r.Thread)}
	location := map[string]any{"uri": geo}
	if r.Description != "" {
		location["description"] = r.Description
	}
	return &event.Content{Parsed: msg, Raw: map[string]any{
		"org.matrix.msc3488.location": location,
		"org.matrix.msc3488.asset":    map[string]any{"type": "m.pin"},
		"org.matrix.msc1767.text":     body,
	}}
}

// React is the `react` action.
type React struct {
	Common
	To
	EventID id.EventID `json:"event_id"`
	Key     string     `json:"key"`
}

// Validate checks the event and the key.
func (r *React) Validate(t Targets) *wire.Error {
	if err := r.To.Check(t); err != nil {
		return err
	}
	if err := CheckEventID("event_id", r.EventID, true); err != nil {
		return err
	}
	if r.Key == "" {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'key' is required (the reaction, e.g. \"👍\")")
	}
	if len(r.Key) > 256 {
		return wire.Errorf(wire.CodeTooLarge, "field 'key' is longer than 256 bytes")
	}
	return nil
}

// Deliver sends the reaction.
func (r *React) Deliver(ctx context.Context, d *Delivery) (any, error) {
	roomID, err := d.Room(ctx)
	if err != nil {
		return nil, err
	}
	content := &event.ReactionEventContent{RelatesTo: *(&event.RelatesTo{}).SetAnnotation(r.EventID, r.Key)}
	evtID, err := d.Matrix.Send(ctx, roomID, event.EventReaction, content, d.TxnID)
	if err != nil {
		return nil, err
	}
	return SendResult{EventID: evtID, RoomID: roomID}, nil
}

// Redact is the `redact` action.
type Redact struct {
	Common
	To
	EventID id.EventID `json:"event_id"`
	Reason  string     `json:"reason,omitempty"`
}

// Validate checks the event.
func (r *Redact) Validate(t Targets) *wire.Error {
	if err := r.To.Check(t); err != nil {
		return err
	}
	return CheckEventID("event_id", r.EventID, true)
}

// Deliver redacts the event.
func (r *Redact) Deliver(ctx context.Context, d *Delivery) (any, error) {
	roomID, err := d.Room(ctx)
	if err != nil {
		return nil, err
	}
	evtID, err := d.Matrix.Redact(ctx, roomID, r.EventID, r.Reason, d.TxnID)
	if err != nil {
		return nil, err
	}
	return SendResult{EventID: evtID, RoomID: roomID}, nil
}

// Typing is the `typing` action.
type Typing struct {
	Common
	To
	Typing    *bool `json:"typing,omitempty"`
	TimeoutMS int   `json:"timeout_ms,omitempty"`
}

// Validate checks the timeout.
func (r *Typing) Validate(t Targets) *wire.Error {
	if err := r.To.Check(t); err != nil {
		return err
	}
	if r.TimeoutMS < 0 || r.TimeoutMS > 600000 {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'timeout_ms' must be between 0 and 600000")
	}
	return nil
}

// Run sets the typing notification; it lasts 30 s unless timeout_ms says otherwise.
func (r *Typing) Run(ctx context.Context, env *Env) (any, error) {
	roomID, err := env.Resolve(ctx, r.target)
	if err != nil {
		return nil, err
	}
	typing := r.Typing == nil || *r.Typing
	timeout := time.Duration(r.TimeoutMS) * time.Millisecond
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	return RoomResult{RoomID: roomID}, env.Matrix.Typing(ctx, roomID, typing, timeout)
}

// ReadReceipt is the `read_receipt` action.
type ReadReceipt struct {
	Common
	To
	EventID id.EventID `json:"event_id"`
}

// Validate checks the event.
func (r *ReadReceipt) Validate(t Targets) *wire.Error {
	if err := r.To.Check(t); err != nil {
		return err
	}
	return CheckEventID("event_id", r.EventID, true)
}

// Run sends the receipt.
func (r *ReadReceipt) Run(ctx context.Context, env *Env) (any, error) {
	roomID, err := env.Resolve(ctx, r.target)
	if err != nil {
		return nil, err
	}
	return RoomResult{RoomID: roomID}, env.Matrix.ReadReceipt(ctx, roomID, r.EventID)
}

// EventField is an optional event ID field and its value.
type EventField struct {
	Name  string
	Value id.EventID
}

// CheckEventIDs checks optional event ID fields.
func CheckEventIDs(fields []EventField) *wire.Error {
	for _, f := range fields {
		if err := CheckEventID(f.Name, f.Value, false); err != nil {
			return err
		}
	}
	return nil
}

func CheckEventID(field string, ev id.EventID, required bool) *wire.Error {
	if ev == "" {
		if required {
			return wire.Errorf(wire.CodeInvalidRequest, "field '%s' is required", field)
		}
		return nil
	}
	if !strings.HasPrefix(string(ev), "$") || len(ev) < 2 || strings.ContainsAny(string(ev), " /\x00") {
		return wire.Errorf(wire.CodeInvalidRequest, "field '%s' must be an event ID ($…), not %q", field, ev)
	}
	return nil
}
