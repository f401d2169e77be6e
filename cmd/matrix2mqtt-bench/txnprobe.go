package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// txnProbe is what the homeserver did with a PUT /send repeated with the same transaction ID
// from the same device: the evidence for what the outbox may do after a failure that left a
// request in doubt. Each count is of tries (out of Tries) in which the room ended up with two
// events for one transaction ID.
type txnProbe struct {
	Tries int `json:"tries"`
	// AfterCompletion: the repeat came after the first request had returned.
	AfterCompletion int `json:"duplicated_after_completion"`
	// WhileInFlight: both requests were sent at once.
	WhileInFlight int `json:"duplicated_while_in_flight"`
	// AfterCancel: the client went away while the homeserver worked on the first request (as a
	// gateway that times out does), and repeated it a second later.
	AfterCancel int `json:"duplicated_after_cancel"`
	// Cancelled counts the tries of AfterCancel whose first request was really cut before its
	// answer (the others had finished already and do not tell anything).
	Cancelled int `json:"cancelled_before_answer"`
	// StoredAfter is the longest a cut request took to show in the room after the cut.
	StoredAfter time.Duration `json:"stored_after_cut_ns"`
}

// probeTxn sends each kind of repeat tries times into room as c and counts the duplicates in
// the room's timeline.
func probeTxn(ctx context.Context, c *mx, room, tag string, tries int) (txnProbe, error) {
	p := txnProbe{Tries: tries}
	for i := range tries {
		txn := fmt.Sprintf("probe%s-done-%d", tag, i)
		for range 2 {
			if _, err := c.send(ctx, room, txn, probeContent(txn)); err != nil {
				return p, fmt.Errorf("failed to send a probe: %w", err)
			}
		}
	}
	for i := range tries {
		txn := fmt.Sprintf("probe%s-flight-%d", tag, i)
		if err := sendTwiceAtOnce(ctx, c, room, txn); err != nil {
			return p, err
		}
	}
	for i := range tries {
		txn := fmt.Sprintf("probe%s-cancel-%d", tag, i)
		cut, stored, err := sendCancelledThenAgain(ctx, c, room, txn, time.Duration(i%4+1)*5*time.Millisecond)
		if err != nil {
			return p, err
		}
		if cut {
			p.Cancelled++
			p.StoredAfter = max(p.StoredAfter, stored)
		}
	}
	time.Sleep(2 * time.Second) // an interrupted request is stored a moment later
	counts, err := bodyCounts(ctx, c, room)
	if err != nil {
		return p, err
	}
	for i := range tries {
		p.AfterCompletion += dup(counts[fmt.Sprintf("probe%s-done-%d", tag, i)])
		p.WhileInFlight += dup(counts[fmt.Sprintf("probe%s-flight-%d", tag, i)])
		p.AfterCancel += dup(counts[fmt.Sprintf("probe%s-cancel-%d", tag, i)])
	}
	return p, nil
}

func dup(n int) int {
	if n > 1 {
		return 1
	}
	return 0
}

func probeContent(body string) map[string]any {
	return map[string]any{"msgtype": "m.notice", "body": body}
}

// sendTwiceAtOnce sends the same transaction twice, concurrently.
func sendTwiceAtOnce(ctx context.Context, c *mx, room, txn string) error {
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for k := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[k] = c.send(ctx, room, txn, probeContent(txn))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("failed to send a probe: %w", err)
		}
	}
	return nil
}

// sendCancelledThenAgain sends txn with a client that gives up after cutAfter, then, a second
// later, again; it reports whether the first was cut before its answer, and how soon after the
// cut it showed in the room (0 if it did not within the second).
func sendCancelledThenAgain(ctx context.Context, c *mx, room, txn string, cutAfter time.Duration) (bool, time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, cutAfter)
	_, err := c.send(cctx, room, txn, probeContent(txn))
	cancel()
	cutAt := time.Now()
	var stored time.Duration
	for time.Since(cutAt) < time.Second {
		counts, cerr := bodyCounts(ctx, c, room)
		if cerr != nil {
			return false, 0, cerr
		}
		if stored == 0 && counts[txn] > 0 {
			stored = time.Since(cutAt)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err2 := c.send(ctx, room, txn, probeContent(txn)); err2 != nil {
		return false, 0, fmt.Errorf("failed to repeat a probe: %w", err2)
	}
	return err != nil, stored, nil
}

// bodyCounts reads the whole timeline of room and counts the events per body.
func bodyCounts(ctx context.Context, c *mx, room string) (map[string]int, error) {
	counts := map[string]int{}
	err := eachMessage(ctx, c, room, func(body, _ string) { counts[body]++ })
	return counts, err
}

// eachMessage calls fn with the body and event ID of every m.room.message in room, oldest
// first.
func eachMessage(ctx context.Context, c *mx, room string, fn func(body, eventID string)) error {
	type msg struct{ body, id string }
	var all []msg
	from := ""
	for {
		q := url.Values{"dir": {"b"}, "limit": {"500"}}
		if from != "" {
			q.Set("from", from)
		}
		var resp struct {
			Chunk []struct {
				ID      string `json:"event_id"`
				Type    string `json:"type"`
				Content struct {
					Body string `json:"body"`
				} `json:"content"`
			} `json:"chunk"`
			End string `json:"end"`
		}
		if err := c.do(ctx, http.MethodGet, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?"+q.Encode(), nil, &resp); err != nil {
			return fmt.Errorf("failed to read the messages of %s: %w", room, err)
		}
		for _, ev := range resp.Chunk {
			if ev.Type == "m.room.message" {
				all = append(all, msg{ev.Content.Body, ev.ID})
			}
		}
		if resp.End == "" || len(resp.Chunk) == 0 {
			break
		}
		from = resp.End
	}
	for i := len(all) - 1; i >= 0; i-- {
		fn(all[i].body, all[i].id)
	}
	return nil
}
