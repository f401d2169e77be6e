package actions

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"strings"
	"unicode"
	"unicode/utf8"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/store"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// Limits of `options`.
const (
	// MaxOptions is how many options one message offers at most.
	MaxOptions = 10
	// MaxOptionLabel is the longest label, in bytes.
	MaxOptionLabel = 200
	// maxOptionsFrom is how many users options_from names at most.
	maxOptionsFrom = 100
)

// OptionStore remembers the messages sent with options.
type OptionStore interface {
	SaveOptions(ctx context.Context, o store.OptionSet) error
}

// Choices are the fields of `send` that make a message actionable: its options are answered
// by reacting with their keys.
type Choices struct {
	Options     []wire.Option `json:"options,omitempty"`
	OptionsFrom []string      `json:"options_from,omitempty"`
	SingleUse   bool          `json:"single_use,omitempty"`
}

// Validate checks the options (keys, labels) and expands options_from to user IDs.
func (c *Choices) Validate(t Targets) *wire.Error {
	if len(c.Options) == 0 {
		if len(c.OptionsFrom) > 0 || c.SingleUse {
			return wire.Errorf(wire.CodeInvalidRequest, "fields 'options_from' and 'single_use' need 'options'")
		}
		return nil
	}
	if len(c.Options) > MaxOptions {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'options' has %d entries; at most %d", len(c.Options), MaxOptions)
	}
	seen := map[string]bool{}
	for i, o := range c.Options {
		if !IsSingleEmoji(o.Key) {
			return wire.Errorf(wire.CodeInvalidRequest, "field 'options[%d].key' must be a single emoji, not %q", i, o.Key)
		}
		if seen[o.Key] {
			return wire.Errorf(wire.CodeInvalidRequest, "field 'options[%d].key' repeats %q: each option needs its own key", i, o.Key)
		}
		seen[o.Key] = true
		if strings.TrimSpace(o.Label) == "" || strings.ContainsAny(o.Label, "\r\n") {
			return wire.Errorf(wire.CodeInvalidRequest, "field 'options[%d].label' must be one line of text", i)
		}
		if len(o.Label) > MaxOptionLabel {
			return wire.Errorf(wire.CodeTooLarge, "field 'options[%d].label' is longer than %d bytes", i, MaxOptionLabel)
		}
	}
	if len(c.OptionsFrom) > maxOptionsFrom {
		return wire.Errorf(wire.CodeInvalidRequest, "field 'options_from' names more than %d users", maxOptionsFrom)
	}
	// Expanded in place: the request is stored with the user IDs that friendly names stood for.
	for i, u := range c.OptionsFrom {
		user, err := t.CheckUser("options_from", u)
		if err != nil {
			return err
		}
		c.OptionsFrom[i] = user.String()
	}
	return nil
}

// allowed are the users of options_from.
func (c *Choices) allowed() []id.UserID {
	var out []id.UserID
	for _, u := range c.OptionsFrom {
		out = append(out, id.UserID(u))
	}
	return out
}

// IsSingleEmoji reports whether s is one emoji: a pictograph with its variation selector, skin
// tone or tags, several of them joined by ZWJ, a flag (two regional indicators) or a keycap.
func IsSingleEmoji(s string) bool {
	if s == "" || len(s) > 64 || !utf8.ValidString(s) {
		return false
	}
	runes := []rune(s)
	if isKeycap(runes) || len(runes) == 2 && isRegional(runes[0]) && isRegional(runes[1]) {
		return true
	}
	expectBase := true
	for _, r := range runes {
		switch {
		case expectBase:
			if !isPictograph(r) {
				return false
			}
			expectBase = false
		case r == 0x200D: // ZWJ: another pictograph follows
			expectBase = true
		case r == 0xFE0F || r == 0xFE0E || r >= 0x1F3FB && r <= 0x1F3FF || r >= 0xE0020 && r <= 0xE007F:
		default:
			return false
		}
	}
	return !expectBase
}

func isPictograph(r rune) bool {
	if isRegional(r) || r >= 0x1F3FB && r <= 0x1F3FF {
		return false
	}
	return unicode.Is(unicode.So, r) && r > 0x7F || r >= 0x1F000 && r <= 0x1FAFF
}

func isRegional(r rune) bool { return r >= 0x1F1E6 && r <= 0x1F1FF }

// isKeycap matches 0️⃣…9️⃣, #️⃣ and *️⃣ (with or without the variation selector).
func isKeycap(r []rune) bool {
	if len(r) < 2 || len(r) > 3 || !strings.ContainsRune("0123456789#*", r[0]) || r[len(r)-1] != 0x20E3 {
		return false
	}
	return len(r) == 2 || r[1] == 0xFE0F
}

// withOptions returns the message content with its options listed (text and HTML).
func withOptions(content *event.MessageEventContent, options []wire.Option) *event.MessageEventContent {
	out := *content
	var text, list strings.Builder
	for _, o := range options {
		fmt.Fprintf(&text, "\n%s %s", o.Key, o.Label)
		fmt.Fprintf(&list, "<li>%s %s</li>", html.EscapeString(o.Key), html.EscapeString(o.Label))
	}
	out.Body = strings.TrimPrefix(content.Body+"\n"+text.String(), "\n\n")
	out.Format = event.FormatHTML
	out.FormattedBody = htmlOf(content) + "<ul>" + list.String() + "</ul>"
	return &out
}

// htmlOf is the content's HTML, or its text escaped.
func htmlOf(content *event.MessageEventContent) string {
	if content.Format == event.FormatHTML && content.FormattedBody != "" {
		return content.FormattedBody
	}
	return strings.ReplaceAll(html.EscapeString(content.Body), "\n", "<br>")
}

// OptionsProgress is what a send with options did so far: the message, then one reaction per
// option.
type OptionsProgress struct {
	EventID   id.EventID            `json:"event_id,omitempty"`
	Reactions map[string]id.EventID `json:"reactions,omitempty"`
}

// Send sends content with the options listed (a file without a caption gets them as its
// caption), remembers them, and reacts with each key (step n+1 for option n), so that answering
// is one tap; the message is kept for reads and t schedules its redaction. p is its progress, kept by save after each step.
func (c *Choices) Send(ctx context.Context, d *Delivery, t Timing, roomID id.RoomID, content *event.MessageEventContent,
	requestID string, p *OptionsProgress, save func() error) (SendResult, error) {
	base := *content
	if base.FileName != "" && base.Body == base.FileName {
		base.Body, base.Format, base.FormattedBody = "", "", ""
	}
	raw, err := json.Marshal(&base)
	if err != nil {
		return SendResult{}, fmt.Errorf("failed to encode message: %w", err)
	}
	set := store.OptionSet{RoomID: roomID, RequestID: requestID, Options: c.Options, Allowed: c.allowed(),
		SingleUse: c.SingleUse, Body: base.Body, HTML: htmlOf(&base), Content: string(raw)}
	if p.EventID == "" {
		if p.EventID, err = d.Matrix.Send(ctx, roomID, event.EventMessage, withOptions(&base, c.Options), d.TxnID); err != nil {
			return SendResult{}, err
		}
		set.EventID = p.EventID
		// Remembered before the bot's reactions, so an answer that comes before them counts.
		if err := d.Options.SaveOptions(ctx, set); err != nil {
			return SendResult{}, err
		}
		if err := save(); err != nil {
			return SendResult{}, err
		}
	}
	set.EventID = p.EventID
	if p.Reactions == nil {
		p.Reactions = map[string]id.EventID{}
	}
	for i, o := range c.Options {
		if p.Reactions[o.Key] != "" {
			continue
		}
		reaction := &event.ReactionEventContent{RelatesTo: *(&event.RelatesTo{}).SetAnnotation(p.EventID, o.Key)}
		evtID, err := d.Matrix.Send(ctx, roomID, event.EventReaction, reaction, d.StepTxnID(i+1))
		if err != nil {
			return SendResult{}, err
		}
		p.Reactions[o.Key] = evtID
		if err := save(); err != nil {
			return SendResult{}, err
		}
	}
	set.Reactions = p.Reactions
	if err := d.Options.SaveOptions(ctx, set); err != nil {
		return SendResult{}, err
	}
	// Watched for reads, but not what "edit": "last" replaces: an edit would drop the options
	// its reactions still answer.
	d.RecordSent(roomID, p.EventID, requestID, false)
	t.scheduleRedaction(d, roomID, p.EventID)
	return SendResult{EventID: p.EventID, RoomID: roomID}, nil
}

// sendWithOptions sends the message with its options and reacts with each key.
func (r *Send) sendWithOptions(ctx context.Context, d *Delivery) (any, error) {
	roomID, err := d.Room(ctx)
	if err != nil {
		return nil, err
	}
	content, err := r.loud(ctx, d, roomID)
	if err != nil {
		return nil, err
	}
	var p OptionsProgress
	if _, err := d.Progress.Load(&p); err != nil {
		return nil, err
	}
	return r.Choices.Send(ctx, d, r.Timing, roomID, content, r.ID, &p, func() error { return d.Progress.Save(ctx, p) })
}

// CloseOptions ends a single_use message once it was answered: it redacts the bot's reactions
// and edits the message to say who chose what, keeping its msgtype (m.notice) and file.
type CloseOptions struct {
	RoomID    id.RoomID    `json:"room_id"`
	EventID   id.EventID   `json:"event_id"`
	Reactions []id.EventID `json:"reactions"`
	Body      string       `json:"body"`
	HTML      string       `json:"html"`
	// Content is the message without its options: the edit keeps its msgtype and file.
	Content json.RawMessage `json:"content,omitempty"`
	// Closed is the line that replaces the options: "✅ Closed by Alice: 👍 Yes".
	Closed string `json:"closed"`
}

// RequestID is empty: nobody waits for the answer.
func (r *CloseOptions) RequestID() string { return "" }

// Validate accepts what the bridge built.
func (r *CloseOptions) Validate(Targets) *wire.Error { return nil }

// Lane is the message's room, so the edit follows the message.
func (r *CloseOptions) Lane() string { return r.RoomID.String() }

// closeProgress counts the steps done: redactions, then the edit.
type closeProgress struct {
	Done int `json:"done"`
}

// Deliver redacts the bot's reactions (step i) and then edits the message (the last step).
func (r *CloseOptions) Deliver(ctx context.Context, d *Delivery) (any, error) {
	var p closeProgress
	if _, err := d.Progress.Load(&p); err != nil {
		return nil, err
	}
	for i := p.Done; i < len(r.Reactions); i++ {
		if _, err := d.Matrix.Redact(ctx, r.RoomID, r.Reactions[i], "answered", d.StepTxnID(i)); err != nil {
			return nil, err
		}
		p.Done = i + 1
		if err := d.Progress.Save(ctx, p); err != nil {
			return nil, err
		}
	}
	content := &event.MessageEventContent{MsgType: event.MsgText} // without Content: queued before v7
	if len(r.Content) > 0 {
		if err := json.Unmarshal(r.Content, content); err != nil {
			return nil, fmt.Errorf("failed to decode the message to close: %w", err)
		}
	}
	content.Body = strings.TrimPrefix(r.Body+"\n\n"+r.Closed, "\n\n")
	content.Format, content.FormattedBody = event.FormatHTML, r.HTML+"<p>"+html.EscapeString(r.Closed)+"</p>"
	content.Mentions, content.RelatesTo = &event.Mentions{}, nil
	content.SetEdit(r.EventID)
	_, err := d.Matrix.Send(ctx, r.RoomID, event.EventMessage, content, d.StepTxnID(len(r.Reactions)))
	return nil, err
}
