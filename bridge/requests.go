package bridge

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"maunium.net/go/mautrix/id"
)

// maxBodyBytes keeps a message's text well inside Matrix's 64 KiB event limit.
const maxBodyBytes = 60000

// Action names: the last segment of `<base>/bridge/request/<action>`.
const (
	ActionSend            = "send"
	ActionSendLocation    = "send_location"
	ActionReact           = "react"
	ActionRedact          = "redact"
	ActionTyping          = "typing"
	ActionReadReceipt     = "read_receipt"
	ActionResolve         = "resolve"
	ActionListRooms       = "list_rooms"
	ActionJoin            = "join"
	ActionLeave           = "leave"
	ActionEnsureDM        = "ensure_dm"
	ActionEnsureEncrypted = "ensure_encrypted"
	ActionGetEvent        = "get_event"
	ActionOutboxFlush     = "outbox_flush"
	ActionOutboxStats     = "outbox_stats"
)

// request is implemented by every action's payload.
type request interface {
	// validate checks the fields once they decoded.
	validate() *Error
}

// SendRequest is the payload of `send`.
type SendRequest struct {
	ID       string     `json:"id,omitempty"`
	To       string     `json:"to"`
	Text     string     `json:"text,omitempty"`
	Markdown string     `json:"markdown,omitempty"`
	HTML     string     `json:"html,omitempty"`
	MsgType  string     `json:"msgtype,omitempty"`
	ReplyTo  id.EventID `json:"reply_to,omitempty"`
	Thread   id.EventID `json:"thread,omitempty"`
	Edit     id.EventID `json:"edit,omitempty"`
	Mentions []string   `json:"mentions,omitempty"`
	// ExpireS drops the message with an `expired` error instead of delivering it later than this
	// many seconds after it was received.
	ExpireS float64 `json:"expire_s,omitempty"`
	// RedactAfterS redacts the message this many seconds after it was sent.
	RedactAfterS float64 `json:"redact_after_s,omitempty"`
}

func (r *SendRequest) validate() *Error {
	if err := requireTarget(r.To); err != nil {
		return err
	}
	set := 0
	for _, s := range []string{r.Text, r.Markdown, r.HTML} {
		if s != "" {
			set++
		}
	}
	if set != 1 {
		return errorf(CodeInvalidRequest, "exactly one of 'text', 'markdown' or 'html' is required")
	}
	if n := len(r.Text) + len(r.Markdown) + len(r.HTML); n > maxBodyBytes {
		return errorf(CodeTooLarge, "the message is %d bytes; at most %d fit in a Matrix event", n, maxBodyBytes)
	}
	switch strings.TrimPrefix(r.MsgType, "m.") {
	case "", "text", "notice", "emote":
	default:
		return errorf(CodeInvalidRequest, "field 'msgtype' must be text, notice or emote, not %q", r.MsgType)
	}
	for field, ev := range map[string]id.EventID{"reply_to": r.ReplyTo, "thread": r.Thread, "edit": r.Edit} {
		if err := checkEventID(field, ev, false); err != nil {
			return err
		}
	}
	if r.Edit != "" && (r.ReplyTo != "" || r.Thread != "") {
		return errorf(CodeInvalidRequest, "field 'edit' cannot be combined with 'reply_to' or 'thread': an edit keeps the original's relations")
	}
	for _, m := range r.Mentions {
		if m == "@room" {
			continue
		}
		if _, _, err := id.UserID(m).ParseAndValidateRelaxed(); err != nil || !strings.HasPrefix(m, "@") {
			return errorf(CodeInvalidRequest, "field 'mentions' must hold user IDs or \"@room\", not %q", m)
		}
	}
	return checkTiming(r.ExpireS, r.RedactAfterS)
}

func (r *SendRequest) timing() (expireS, redactAfterS float64) { return r.ExpireS, r.RedactAfterS }

// timed is implemented by the requests that take `expire_s` and `redact_after_s`.
type timed interface {
	timing() (expireS, redactAfterS float64)
}

func checkTiming(expireS, redactAfterS float64) *Error {
	if expireS < 0 {
		return errorf(CodeInvalidRequest, "field 'expire_s' must not be negative")
	}
	if redactAfterS < 0 {
		return errorf(CodeInvalidRequest, "field 'redact_after_s' must not be negative")
	}
	return nil
}

// LocationRequest is the payload of `send_location`.
type LocationRequest struct {
	ID          string     `json:"id,omitempty"`
	To          string     `json:"to"`
	Lat         *float64   `json:"lat"`
	Lon         *float64   `json:"lon"`
	Description string     `json:"description,omitempty"`
	ReplyTo     id.EventID `json:"reply_to,omitempty"`
	Thread      id.EventID `json:"thread,omitempty"`
	// ExpireS and RedactAfterS work as in SendRequest.
	ExpireS      float64 `json:"expire_s,omitempty"`
	RedactAfterS float64 `json:"redact_after_s,omitempty"`
}

func (r *LocationRequest) validate() *Error {
	if err := requireTarget(r.To); err != nil {
		return err
	}
	if r.Lat == nil || r.Lon == nil {
		return errorf(CodeInvalidRequest, "fields 'lat' and 'lon' are required (degrees, WGS 84)")
	}
	if *r.Lat < -90 || *r.Lat > 90 {
		return errorf(CodeInvalidRequest, "field 'lat' must be between -90 and 90, not %v", *r.Lat)
	}
	if *r.Lon < -180 || *r.Lon > 180 {
		return errorf(CodeInvalidRequest, "field 'lon' must be between -180 and 180, not %v", *r.Lon)
	}
	// The description goes into the event three times (body, text fallback, location).
	if len(r.Description) > maxBodyBytes/4 {
		return errorf(CodeTooLarge, "field 'description' is %d bytes; at most %d fit in a Matrix event", len(r.Description), maxBodyBytes/4)
	}
	for field, ev := range map[string]id.EventID{"reply_to": r.ReplyTo, "thread": r.Thread} {
		if err := checkEventID(field, ev, false); err != nil {
			return err
		}
	}
	return checkTiming(r.ExpireS, r.RedactAfterS)
}

func (r *LocationRequest) timing() (expireS, redactAfterS float64) {
	return r.ExpireS, r.RedactAfterS
}

// ReactRequest is the payload of `react`.
type ReactRequest struct {
	ID      string     `json:"id,omitempty"`
	To      string     `json:"to"`
	EventID id.EventID `json:"event_id"`
	Key     string     `json:"key"`
}

func (r *ReactRequest) validate() *Error {
	if err := requireTarget(r.To); err != nil {
		return err
	}
	if err := checkEventID("event_id", r.EventID, true); err != nil {
		return err
	}
	if r.Key == "" {
		return errorf(CodeInvalidRequest, "field 'key' is required (the reaction, e.g. \"👍\")")
	}
	if len(r.Key) > 256 {
		return errorf(CodeTooLarge, "field 'key' is longer than 256 bytes")
	}
	return nil
}

// RedactRequest is the payload of `redact`.
type RedactRequest struct {
	ID      string     `json:"id,omitempty"`
	To      string     `json:"to"`
	EventID id.EventID `json:"event_id"`
	Reason  string     `json:"reason,omitempty"`
}

func (r *RedactRequest) validate() *Error {
	if err := requireTarget(r.To); err != nil {
		return err
	}
	return checkEventID("event_id", r.EventID, true)
}

// TypingRequest is the payload of `typing`.
type TypingRequest struct {
	ID        string `json:"id,omitempty"`
	To        string `json:"to"`
	Typing    *bool  `json:"typing,omitempty"`
	TimeoutMS int    `json:"timeout_ms,omitempty"`
}

func (r *TypingRequest) validate() *Error {
	if err := requireTarget(r.To); err != nil {
		return err
	}
	if r.TimeoutMS < 0 || r.TimeoutMS > 600000 {
		return errorf(CodeInvalidRequest, "field 'timeout_ms' must be between 0 and 600000")
	}
	return nil
}

// ReadReceiptRequest is the payload of `read_receipt` and `get_event`.
type ReadReceiptRequest struct {
	ID      string     `json:"id,omitempty"`
	To      string     `json:"to"`
	EventID id.EventID `json:"event_id"`
}

func (r *ReadReceiptRequest) validate() *Error {
	if err := requireTarget(r.To); err != nil {
		return err
	}
	return checkEventID("event_id", r.EventID, true)
}

// TargetRequest is the payload of `resolve`.
type TargetRequest struct {
	ID string `json:"id,omitempty"`
	To string `json:"to"`
}

func (r *TargetRequest) validate() *Error { return requireTarget(r.To) }

// RoomRequest is the payload of `join`, `leave` and `ensure_encrypted`.
type RoomRequest struct {
	ID   string `json:"id,omitempty"`
	Room string `json:"room"`
}

func (r *RoomRequest) validate() *Error {
	if r.Room == "" {
		return errorf(CodeInvalidRequest, "field 'room' is required (a room ID, alias or friendly name)")
	}
	return nil
}

// UserRequest is the payload of `ensure_dm`.
type UserRequest struct {
	ID   string `json:"id,omitempty"`
	User string `json:"user"`
}

func (r *UserRequest) validate() *Error {
	if r.User == "" {
		return errorf(CodeInvalidRequest, "field 'user' is required (a user ID or friendly name)")
	}
	return nil
}

// EmptyRequest is the payload of actions that take only an id.
type EmptyRequest struct {
	ID string `json:"id,omitempty"`
}

func (r *EmptyRequest) validate() *Error { return nil }

func requireTarget(to string) *Error {
	if to == "" {
		return errorf(CodeInvalidRequest, "field 'to' is required (a room ID, alias, user ID or friendly name)")
	}
	return nil
}

func checkEventID(field string, ev id.EventID, required bool) *Error {
	if ev == "" {
		if required {
			return errorf(CodeInvalidRequest, "field '%s' is required", field)
		}
		return nil
	}
	if !strings.HasPrefix(string(ev), "$") || len(ev) < 2 || strings.ContainsAny(string(ev), " /\x00") {
		return errorf(CodeInvalidRequest, "field '%s' must be an event ID ($…), not %q", field, ev)
	}
	return nil
}

// newRequest returns an empty payload for action, or nil for an unknown action.
func newRequest(action string) request {
	switch action {
	case ActionSend:
		return &SendRequest{}
	case ActionSendLocation:
		return &LocationRequest{}
	case ActionReact:
		return &ReactRequest{}
	case ActionRedact:
		return &RedactRequest{}
	case ActionTyping:
		return &TypingRequest{}
	case ActionReadReceipt, ActionGetEvent:
		return &ReadReceiptRequest{}
	case ActionResolve:
		return &TargetRequest{}
	case ActionJoin, ActionLeave, ActionEnsureEncrypted:
		return &RoomRequest{}
	case ActionEnsureDM:
		return &UserRequest{}
	case ActionListRooms, ActionOutboxFlush, ActionOutboxStats:
		return &EmptyRequest{}
	}
	return nil
}

// requestID digs the "id" out of a payload that may not decode, so that even an invalid request
// is answered with its id.
func requestID(payload []byte) string {
	var probe struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(payload, &probe) != nil {
		return ""
	}
	var s string
	if json.Unmarshal(probe.ID, &s) != nil {
		return ""
	}
	return s
}

// decodeStrict decodes payload into req: a JSON object with no unknown fields and no field of the
// wrong type. The error names the field.
func decodeStrict(payload []byte, req request) *Error {
	if !utf8.Valid(payload) {
		return errorf(CodeInvalidRequest, "the payload is not UTF-8")
	}
	trimmed := bytes.TrimSpace(payload)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return errorf(CodeInvalidRequest, "the payload must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(req); err != nil {
		return decodeError(err, req)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errorf(CodeInvalidRequest, "the payload has data after the JSON object")
	}
	return nil
}

func decodeError(err error, req request) *Error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return errorf(CodeInvalidRequest, "the payload must be a JSON object")
		}
		return errorf(CodeInvalidRequest, "field '%s' must be %s, not %s", typeErr.Field, jsonKind(typeErr.Type), typeErr.Value)
	case errors.As(err, &syntaxErr):
		return errorf(CodeInvalidRequest, "the payload is not valid JSON: %v", err)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return errorf(CodeInvalidRequest, "field '%s' is not known; this action takes %s", field, strings.Join(fieldNames(req), ", "))
	}
	return errorf(CodeInvalidRequest, "the payload is not valid JSON: %v", err)
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64:
		return "a whole number"
	case reflect.Float64:
		return "a number"
	case reflect.Slice:
		return "a list"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "an object"
}

func fieldNames(req request) []string {
	t := reflect.TypeOf(req).Elem()
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		names = append(names, name)
	}
	return names
}

// plannedActions are in the design's contract but not built yet; a request for one is told so.
var plannedActions = []string{
	"send_media", "invite", "kick", "ban", "unban", "create_room",
	"set_power_level", "set_room", "members", "broadcast",
}

// parsePayload decodes a request for action; the shortcut topic `<base>/send/<target>` passes
// target, which makes plain text a send request too.
func parsePayload(action string, payload []byte, target string) (request, *Error) {
	req := newRequest(action)
	if req == nil {
		if slices.Contains(plannedActions, action) {
			return nil, errorf(CodeUnknownAction, "action %q is planned but not in this version yet; see docs/mqtt-api.md", action)
		}
		return nil, errorf(CodeUnknownAction, "action %q is not known; see docs/mqtt-api.md", action)
	}
	if target != "" {
		send := req.(*SendRequest)
		trimmed := bytes.TrimSpace(payload)
		if len(trimmed) > 0 && trimmed[0] == '{' {
			if err := decodeStrict(payload, send); err != nil {
				return nil, err
			}
			if send.To != "" && send.To != target {
				return nil, errorf(CodeInvalidRequest, "field 'to' (%q) contradicts the topic's target %q", send.To, target)
			}
		} else {
			if !utf8.Valid(payload) {
				return nil, errorf(CodeInvalidRequest, "the payload is not UTF-8")
			}
			send.Text = string(payload)
		}
		send.To = target
	} else if err := decodeStrict(payload, req); err != nil {
		return nil, err
	}
	if err := req.validate(); err != nil {
		return nil, err
	}
	return req, nil
}

// idOf returns the request's "id".
func idOf(req request) string {
	return reflect.ValueOf(req).Elem().FieldByName("ID").String()
}
