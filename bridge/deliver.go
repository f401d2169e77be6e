package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// actionAutoRedact is the internal outbox action that carries out `redact_after_s`; it has no
// response topic.
const actionAutoRedact = "auto_redact"

// autoRedact is the request of an actionAutoRedact entry.
type autoRedact struct {
	RoomID  id.RoomID  `json:"room_id"`
	EventID id.EventID `json:"event_id"`
}

// SendResult is the data of a successful send, react or redact.
type SendResult struct {
	EventID id.EventID `json:"event_id"`
	RoomID  id.RoomID  `json:"room_id"`
}

// retryBase and retryLimit bound the backoff between delivery attempts.
const (
	retryBase  = time.Second
	retryLimit = 5 * time.Minute
)

// deliver works on one outbox entry until it is answered or ctx ends (then it stays in the
// outbox for the next start): it waits for Matrix, for a scheduled time, retries what may pass
// with backoff, and answers expired requests.
func (b *Bridge) deliver(ctx context.Context, e *entry) {
	select {
	case <-b.ready:
	case <-ctx.Done():
		return
	}
	for attempt := 0; ; attempt++ {
		if e.inDoubt != nil && !b.waitInDoubt(ctx, e) {
			return
		}
		now := b.clock.Now()
		if wait := e.NotBefore.Sub(now); wait > 0 {
			if !b.sleep(ctx, wait, false) {
				return
			}
			now = b.clock.Now()
		}
		if deadline := b.deadline(e); now.After(deadline) {
			b.finish(ctx, e, nil, errorf(CodeExpired, "not delivered within %s of being received", deadline.Sub(e.CreatedAt).Round(time.Second)))
			return
		}
		data, followUps, err := b.execute(ctx, e)
		if err == nil {
			b.finish(ctx, e, data, nil, followUps...)
			return
		}
		if ctx.Err() != nil {
			return
		}
		out := classify(err)
		if !out.retry {
			b.finish(ctx, e, nil, out.err)
			return
		}
		if mayHaveArrived(err) {
			e.inDoubt = b.out.NextSync()
		}
		wait := max(out.retryWait, matrix.Backoff(attempt, retryBase, retryLimit))
		if until := b.deadline(e).Sub(b.clock.Now()); until < wait {
			wait = max(until, 0) + time.Millisecond
		}
		b.stats.failed(out.err)
		b.log.Warn().Err(err).Int64("outbox_id", e.ID).Str("action", e.Action).Dur("retry_in", wait).Msg("Delivery failed, will retry")
		if !b.sleep(ctx, wait, true) {
			return
		}
	}
}

// waitInDoubt waits until sync can tell whether an entry in doubt was sent: a homeserver that
// forgot the transaction ID (Dendrite after a restart, or after an interrupted request) would
// take the retry for a new message. It waits for the next sync, and, when sync had failed, for
// inDoubtGrace after it works again, watching each sync for the entry's echo: a homeserver that
// was stopped in the middle of the request may store it only when it is back (Dendrite replays
// its input queue). The wait is bounded by inDoubtWait, counted again while sync is down (a
// retry then would fail or be unconfirmed) up to inDoubtMaxWait. It reports false when ctx ended.
func (b *Bridge) waitInDoubt(ctx context.Context, e *entry) bool {
	var bound <-chan time.Time // inDoubtWait from the first wait on
	var started time.Time
	arm := func() {
		if bound == nil {
			started = b.clock.Now()
			bound = b.clock.After(inDoubtWait)
		}
	}
	// expired reports whether the bound fired for good; while sync is down it re-arms it.
	expired := func() bool {
		if b.out.Healthy() || b.clock.Now().Sub(started) >= inDoubtMaxWait {
			return true
		}
		bound = b.clock.After(inDoubtWait)
		return false
	}
	for {
		select {
		case <-e.inDoubt:
		default:
			arm()
			select {
			case <-e.inDoubt:
			case <-bound:
				if expired() {
					return true
				}
				continue
			case <-ctx.Done():
				return false
			}
		}
		if _, sent := b.out.SentWithTxn(ctx, e.TxnID); sent {
			return true
		}
		grace := b.out.HealthySince().Add(inDoubtGrace).Sub(b.clock.Now())
		if grace <= 0 {
			return true
		}
		arm()
		e.inDoubt = b.out.NextSync()
		select {
		case <-e.inDoubt:
		case <-b.clock.After(grace):
			return true
		case <-bound:
			if expired() {
				return true
			}
		case <-ctx.Done():
			return false
		}
	}
}

// inDoubtWait bounds the wait for a sync before a request in doubt is sent again, and
// inDoubtMaxWait that wait while sync is down.
const (
	inDoubtWait    = 30 * time.Second
	inDoubtMaxWait = 2 * time.Minute
)

// inDoubtGrace is how long after sync works again a request in doubt waits for its echo.
const inDoubtGrace = 5 * time.Second

// mayHaveArrived tells a failure after which the homeserver may have taken the request (the
// connection broke, a gateway or server error) from one it answered without acting on it.
func mayHaveArrived(err error) bool {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		return httpErr.Response.StatusCode >= 500
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" { // no connection, so no request
		return false
	}
	return !errors.Is(err, matrix.ErrUnknownTarget)
}

// deadline is when the entry expires: its expire_s, or OUTBOX_MAX_AGE after it was received.
func (b *Bridge) deadline(e *entry) time.Time {
	limit := e.CreatedAt.Add(b.cfg.OutboxMaxAge)
	if e.NotBefore.After(e.CreatedAt) {
		limit = e.NotBefore.Add(b.cfg.OutboxMaxAge)
	}
	if !e.ExpiresAt.IsZero() && e.ExpiresAt.Before(limit) {
		return e.ExpiresAt
	}
	return limit
}

// sleep waits for d, or until outbox_flush when flushable; it reports false when ctx ended.
func (b *Bridge) sleep(ctx context.Context, d time.Duration, flushable bool) bool {
	var flush chan struct{}
	if flushable {
		b.flushMu.Lock()
		flush = b.flushCh
		b.flushMu.Unlock()
	}
	b.asleep.Add(1)
	defer b.asleep.Add(-1)
	select {
	case <-b.clock.After(d):
	case <-flush:
	case <-ctx.Done():
		return false
	}
	return true
}

// flush makes every lane that waits to retry try again now.
func (b *Bridge) flush() {
	b.flushMu.Lock()
	close(b.flushCh)
	b.flushCh = make(chan struct{})
	b.flushMu.Unlock()
}

// finish answers the entry, then removes it from the outbox with its follow-ups. Answering
// first means a crash in between answers again, with the same event ID, rather than never.
func (b *Bridge) finish(ctx context.Context, e *entry, data any, err *Error, followUps ...*entry) {
	if e.Action != actionAutoRedact && e.Action != actionCommandReact {
		var id string
		var probe struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(e.Request, &probe) == nil {
			id = probe.ID
		}
		b.respond(ctx, e.Action, id, data, err)
	}
	if err != nil {
		b.log.Warn().Int64("outbox_id", e.ID).Str("action", e.Action).Str("code", err.Code).Str("reason", err.Message).Msg("Request failed")
	}
	for {
		ferr := b.outbox.finish(ctx, e, b.clock.Now(), followUps)
		if ferr == nil {
			break
		}
		b.log.Error().Err(ferr).Msg("Failed to update the outbox; retrying")
		if !b.sleep(ctx, time.Second, false) {
			return
		}
	}
	b.stats.done(e, err)
	for _, f := range followUps {
		b.stats.enqueued(f)
		b.lanes.push(ctx, f)
	}
}

// execute carries out one durable request against Matrix.
func (b *Bridge) execute(ctx context.Context, e *entry) (any, []*entry, error) {
	if e.Action == actionAutoRedact {
		var r autoRedact
		if err := decodeStored(e, &r); err != nil {
			return nil, nil, err
		}
		_, err := b.sendOnce(ctx, e, func() (id.EventID, error) {
			return b.out.Redact(ctx, r.RoomID, r.EventID, "redact_after_s", e.TxnID)
		})
		return nil, nil, err
	}
	roomID, err := b.resolve(ctx, e.Lane)
	if err != nil {
		return nil, nil, err
	}
	var send func() (id.EventID, error)
	var redactAfter float64
	switch e.Action {
	case ActionSend:
		var r SendRequest
		if err := decodeStored(e, &r); err != nil {
			return nil, nil, err
		}
		redactAfter = r.RedactAfterS
		send = func() (id.EventID, error) {
			return b.out.Send(ctx, roomID, event.EventMessage, messageContent(&r), e.TxnID)
		}
	case ActionSendLocation:
		var r LocationRequest
		if err := decodeStored(e, &r); err != nil {
			return nil, nil, err
		}
		redactAfter = r.RedactAfterS
		send = func() (id.EventID, error) {
			return b.out.Send(ctx, roomID, event.EventMessage, locationContent(&r), e.TxnID)
		}
	case ActionReact, actionCommandReact:
		var r ReactRequest
		if err := decodeStored(e, &r); err != nil {
			return nil, nil, err
		}
		content := &event.ReactionEventContent{RelatesTo: *(&event.RelatesTo{}).SetAnnotation(r.EventID, r.Key)}
		send = func() (id.EventID, error) { return b.out.Send(ctx, roomID, event.EventReaction, content, e.TxnID) }
	case ActionRedact:
		var r RedactRequest
		if err := decodeStored(e, &r); err != nil {
			return nil, nil, err
		}
		send = func() (id.EventID, error) { return b.out.Redact(ctx, roomID, r.EventID, r.Reason, e.TxnID) }
	default:
		return nil, nil, fmt.Errorf("unknown outbox action %q", e.Action)
	}
	evtID, err := b.sendOnce(ctx, e, send)
	if err != nil {
		return nil, nil, err
	}
	var followUps []*entry
	if redactAfter > 0 {
		req, _ := json.Marshal(autoRedact{RoomID: roomID, EventID: evtID})
		now := b.clock.Now()
		followUps = append(followUps, &entry{
			Action: actionAutoRedact, Lane: "redact_after/" + evtID.String(), Request: req,
			TxnID: newTxnID(), CreatedAt: now, NotBefore: now.Add(seconds(redactAfter)),
		})
	}
	return SendResult{EventID: evtID, RoomID: roomID}, followUps, nil
}

func decodeStored(e *entry, req any) error {
	if err := json.Unmarshal(e.Request, req); err != nil {
		return fmt.Errorf("failed to decode stored request %d: %w", e.ID, err)
	}
	return nil
}

// sendOnce runs send unless the entry is in doubt and sync already echoed its transaction ID:
// then it was sent before, and its event ID is the answer.
func (b *Bridge) sendOnce(ctx context.Context, e *entry, send func() (id.EventID, error)) (id.EventID, error) {
	if e.inDoubt != nil {
		if evtID, ok := b.out.SentWithTxn(ctx, e.TxnID); ok {
			b.log.Info().Int64("outbox_id", e.ID).Stringer("event_id", evtID).Msg("Request was sent before the restart; not sending it again")
			return evtID, nil
		}
	}
	return send()
}

// resolve turns an expanded target into a room ID and remembers it for the topic keys.
func (b *Bridge) resolve(ctx context.Context, target string) (id.RoomID, error) {
	roomID, err := b.out.Resolve(ctx, target)
	if err != nil {
		return "", err
	}
	b.keys.remember(target, roomID)
	return roomID, nil
}

// messageContent builds the m.room.message content of a send request.
func messageContent(r *SendRequest) *event.MessageEventContent {
	var content event.MessageEventContent
	switch {
	case r.Markdown != "":
		content = format.RenderMarkdown(r.Markdown, true, true)
	case r.HTML != "":
		content = format.HTMLToContent(r.HTML)
	default:
		content = event.MessageEventContent{Body: r.Text}
	}
	content.MsgType = event.MsgText
	switch strings.TrimPrefix(r.MsgType, "m.") {
	case "notice":
		content.MsgType = event.MsgNotice
	case "emote":
		content.MsgType = event.MsgEmote
	}
	// m.mentions holds the pills in the text (found by the format package) and the explicit
	// mentions; it is always present, so clients do not guess mentions from the body.
	if content.Mentions == nil {
		content.Mentions = &event.Mentions{}
	}
	for _, m := range r.Mentions {
		if m == "@room" {
			content.Mentions.Room = true
		} else if !slices.Contains(content.Mentions.UserIDs, id.UserID(m)) {
			content.Mentions.UserIDs = append(content.Mentions.UserIDs, id.UserID(m))
		}
	}
	if r.Edit != "" {
		content.SetEdit(r.Edit)
	} else {
		content.RelatesTo = replyOrThread(r.ReplyTo, r.Thread)
	}
	return &content
}

// replyOrThread relates a message to replyTo and/or puts it into the thread of root (with the
// reply fallback that clients without threads show); nil when both are empty.
func replyOrThread(replyTo, root id.EventID) *event.RelatesTo {
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

// locationContent is an m.location message as Element sends a pinned location: geo_uri for
// every client, and the extensible-event fields (MSC3488) that newer clients draw a map from.
func locationContent(r *LocationRequest) *event.Content {
	geo := fmt.Sprintf("geo:%s,%s", strconv.FormatFloat(*r.Lat, 'f', -1, 64), strconv.FormatFloat(*r.Lon, 'f', -1, 64))
	body := "Location " + geo
	if r.Description != "" {
		body = r.Description + " (" + geo + ")"
	}
	msg := &event.MessageEventContent{MsgType: event.MsgLocation, Body: body, GeoURI: geo,
		Mentions: &event.Mentions{}, RelatesTo: replyOrThread(r.ReplyTo, r.Thread)}
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
