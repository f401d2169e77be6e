package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// backlogWindow bounds the requests published and not yet in the outbox: Mosquitto queues at
// most 1,000 messages for a client (max_queued_messages) and drops the rest.
const backlogWindow = 800

// backlogPoll is how often the benchmark reads the outbox's size while it queues requests:
// each read makes the bridge count its pending requests.
const backlogPoll = 50 * time.Millisecond

// firstDeliveryLimit bounds the wait for the first delivery after the outage: the outbox's
// retry backoff is at most 5 minutes.
const firstDeliveryLimit = 6 * time.Minute

// outage stands in front of the stand-in: while status is set it answers every /send with it,
// as a homeserver that takes no messages; every other request passes through.
type outage struct {
	next    http.Handler
	status  atomic.Int32
	refused atomic.Int64
}

func (g *outage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	status := int(g.status.Load())
	if status == 0 || r.Method != http.MethodPut || !strings.Contains(r.URL.Path, "/send/") {
		g.next.ServeHTTP(w, r)
		return
	}
	g.refused.Add(1)
	errcode := "M_UNKNOWN"
	if status == http.StatusTooManyRequests {
		errcode = "M_LIMIT_EXCEEDED" // without retry_after_ms: the outbox's own backoff
	}
	writeJSON(w, status, map[string]any{"errcode": errcode, "error": "stand-in outage"})
}

// backlogSetup is the bridge of the backlog scenario, on a stand-in of its own behind the
// outage, with its HTTP server on, whose GET /stats tells how many requests the outbox holds.
type backlogSetup struct {
	s     *standIn
	gate  *outage
	front *httptest.Server
	r     *running
	stats string
}

func (b *bench) backlogBridge() (*backlogSetup, error) {
	s := newStandIn(b.o.lanes)
	bl := &backlogSetup{s: s, gate: &outage{next: s.srv.Config.Handler}}
	bl.front = httptest.NewServer(bl.gate)
	addr, err := freeAddr()
	if err != nil {
		bl.closeServers()
		return nil, err
	}
	bl.stats = "http://" + addr + "/stats"
	env := b.bridgeEnv("backlog", bl.front.URL, s.userID, "standin-password", filepath.Join(b.dir, "data-backlog"),
		map[string]string{"E2EE": "false", "HTTP_LISTEN": addr})
	if bl.r, err = b.startBridge("backlog", env); err != nil {
		bl.closeServers()
		return nil, err
	}
	return bl, nil
}

// closeBacklog stops the bridge, then the servers it talks to.
func (b *bench) closeBacklog(bl *backlogSetup) {
	if err := b.closeBridge(bl.r); err != nil {
		b.logf("backlog: %v", err)
	}
	bl.closeServers()
}

func (bl *backlogSetup) closeServers() {
	bl.front.Close()
	bl.s.close()
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("failed to find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// pending returns outbox_pending from the bridge's GET /stats.
func (bl *backlogSetup) pending(ctx context.Context, hc *http.Client) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, bl.stats, nil)
	if err != nil {
		return 0, fmt.Errorf("failed to read the bridge's stats: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("failed to read the bridge's stats: %w", err)
	}
	defer resp.Body.Close()
	var st struct {
		Pending int `json:"outbox_pending"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return 0, fmt.Errorf("failed to read the bridge's stats: %w", err)
	}
	return st.Pending, nil
}

// backlog is scenario 7: the bridge on the stand-in while it refuses every /send. The
// benchmark commits N send requests to the outbox, measures the bridge while they wait, lets
// the stand-in take sends again and measures the drain. The reference is the same number of
// requests through an empty outbox (the ceiling's load) on the same bridge just before.
func (b *bench) backlog(ctx context.Context) error {
	bl, err := b.backlogBridge()
	if err != nil {
		return err
	}
	defer b.closeBacklog(bl)
	// Under -short, 4 rooms: each lane then holds more than the 256 entries it keeps in memory,
	// so the smoke run reads queues back from the store too.
	rooms := bl.s.rooms[:b.o.lanes]
	if b.o.short {
		rooms = rooms[:min(4, len(rooms))]
	}
	ref, refUse, err := b.emptyOutbox(ctx, bl.r, rooms)
	if err != nil {
		return err
	}
	b.logf("  empty outbox: %d requests at %.0f msg/s; now %d during an outage (/send answers %d)", len(ref.resp), ref.rate(), b.o.backlogN, b.o.backlogStatus)
	q, err := b.queueDuringOutage(ctx, bl, rooms)
	if err != nil {
		return err
	}
	b.logf("  %d requests in the outbox after %s; RSS %.1f MB; stand-in takes sends again", b.o.backlogN, q.took.Round(time.Millisecond), mb(q.rss))
	sends0 := bl.s.sends.Load()
	d, err := b.drainBacklog(ctx, bl, q.waits)
	if err != nil {
		return err
	}
	b.backlogRows(ref, refUse, q, d)
	if d.failed > 0 {
		return fmt.Errorf("%d of %d requests answered with an error after the outage (first: %s)", d.failed, b.o.backlogN, d.firstErr)
	}
	if taken := bl.s.sends.Load() - sends0; taken != int64(b.o.backlogN) {
		return fmt.Errorf("the stand-in took %d sends for %d queued requests: a request was sent twice or not at all", taken, b.o.backlogN)
	}
	return nil
}

// emptyOutbox is the reference: backlog-n requests through the empty outbox, as the ceiling
// sends them, after a warm-up.
func (b *bench) emptyOutbox(ctx context.Context, r *running, rooms []string) (phase, usage, error) {
	n := b.o.backlogN
	if warm := b.sendPhase(ctx, r, nil, rooms, nil, min(1000, n/4), b.o.window); warm.errors > 0 {
		return phase{}, usage{}, fmt.Errorf("warm-up: %d errors (first: %s)", warm.errors, warm.firstErr)
	}
	meter := startMeter(r.proc)
	p := b.sendPhase(ctx, r, nil, rooms, nil, n, b.o.window)
	u := meter.stop()
	if p.errors > 0 {
		return phase{}, usage{}, fmt.Errorf("empty outbox: %d errors (first: %s)", p.errors, p.firstErr)
	}
	return p, u, ctx.Err()
}

// outageRun is what the benchmark measured while the stand-in refused sends.
type outageRun struct {
	waits   []<-chan response
	took    time.Duration // first publish → every request in the outbox
	before  int64         // RSS before the outage, after the empty-outbox run
	rss     int64         // while they wait, settled
	peak    int64         // sampled from the first publish until then
	heap    uint64
	idleCPU float64 // share of one CPU the bridge used while they waited
	refused int64   // sends the stand-in refused
}

// queueDuringOutage makes the stand-in refuse sends, publishes backlog-n requests, and
// measures the bridge once they all wait in the outbox.
func (b *bench) queueDuringOutage(ctx context.Context, bl *backlogSetup, rooms []string) (*outageRun, error) {
	// The empty-outbox run's last requests are answered before their entries are deleted: wait
	// for those, or they would leave the count of this run short when they go.
	base, err := bl.pending(ctx, b.hc)
	for deadline := time.Now().Add(30 * time.Second); err == nil && base > 0 && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backlogPoll):
		}
		base, err = bl.pending(ctx, b.hc)
	}
	if err != nil {
		return nil, err
	}
	before, _ := bl.r.proc.rss()
	bl.gate.status.Store(int32(b.o.backlogStatus))
	meter := startMeter(bl.r.proc)
	start := time.Now()
	waits, err := b.publishPaced(ctx, bl, rooms, base)
	if err != nil {
		meter.stop()
		return nil, err
	}
	q := &outageRun{waits: waits, took: time.Since(start), before: before}
	cpu0, idleFrom := bl.r.proc.cpu(), time.Now()
	select {
	case <-ctx.Done():
	case <-time.After(b.settle()):
	}
	q.idleCPU = (bl.r.proc.cpu() - cpu0).Seconds() / time.Since(idleFrom).Seconds()
	q.rss, _ = bl.r.proc.rss()
	q.peak = meter.stop().PeakRSS
	if mem, err := bl.r.proc.memStats(); err == nil {
		q.heap = mem.HeapInuse
	}
	b.profile("backlog", bl.r.proc)() // -memprofile: what the bridge holds while they wait
	q.refused = bl.gate.refused.Load()
	if n, first := earlyAnswers(waits); n > 0 {
		return nil, fmt.Errorf("%d requests were answered during the outage instead of waiting (first: %s %s)", n, first.Status, first.Error)
	}
	return q, ctx.Err()
}

// publishPaced publishes backlog-n send requests over rooms, at most backlogWindow ahead of
// what the outbox holds (base before them), and returns once it holds them all, with a waiter
// for each response.
func (b *bench) publishPaced(ctx context.Context, bl *backlogSetup, rooms []string, base int) ([]<-chan response, error) {
	n := b.o.backlogN
	waits := make([]<-chan response, 0, n)
	held, progressAt := 0, time.Now()
	for held < n {
		var toks []paho.Token
		for len(waits) < n && len(waits)-held < backlogWindow {
			reqID, payload := b.backlogRequest(rooms[len(waits)%len(rooms)])
			waits = append(waits, bl.r.mon.expect(reqID))
			toks = append(toks, bl.r.mon.cli.Publish(bl.r.base+"/bridge/request/send", 1, false, payload))
		}
		if err := waitTokens(toks); err != nil {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backlogPoll):
		}
		pending, err := bl.pending(ctx, b.hc)
		if err != nil {
			return nil, err
		}
		if pending-base > held {
			held, progressAt = pending-base, time.Now()
		} else if time.Since(progressAt) > time.Minute {
			return nil, fmt.Errorf("the outbox holds %d of %d requests and took none for a minute (did the broker drop some?)", held, n)
		}
	}
	return waits, nil
}

// backlogRequest makes a send request to room: its id and payload.
func (b *bench) backlogRequest(room string) (string, []byte) {
	seq := reqSeq.Add(1)
	reqID := fmt.Sprintf("q%s-%d", b.tag, seq)
	payload, _ := json.Marshal(map[string]string{"id": reqID, "to": room, "text": fmt.Sprintf("Benchmark message %d queued during an outage", seq)})
	return reqID, payload
}

// waitTokens waits until the broker acknowledged each publish.
func waitTokens(toks []paho.Token) error {
	for _, t := range toks {
		if !t.WaitTimeout(30 * time.Second) {
			return errors.New("failed to publish a request: no PUBACK within 30s")
		}
		if err := t.Error(); err != nil {
			return fmt.Errorf("failed to publish a request: %w", err)
		}
	}
	return nil
}

// earlyAnswers counts the requests already answered, and returns the first such answer.
func earlyAnswers(waits []<-chan response) (int, response) {
	n, first := 0, response{}
	for _, ch := range waits {
		if len(ch) == 0 {
			continue
		}
		if n == 0 {
			first = <-ch
		}
		n++
	}
	return n, first
}

// drainRun is what the benchmark measured after the stand-in took sends again.
type drainRun struct {
	toFirst    time.Duration // stand-in back → first send it took
	dur        time.Duration // first send → last response
	toAll      time.Duration // stand-in back → last response
	ok, failed int
	firstErr   string
	use        usage
	answers    []time.Time // when each response arrived
	// firstHalf and secondHalf are the rates over each half of the responses.
	firstHalf, secondHalf float64
}

func (d *drainRun) rate() float64 { return float64(d.ok) / d.dur.Seconds() }

// halves returns the drain's rate over the first and over the second half of the responses
// from first on: a cost that grows with the backlog makes the second half faster.
func (d *drainRun) halves(first time.Time) (float64, float64) {
	at := slices.Clone(d.answers)
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	if len(at) < 2 {
		return nan, nan
	}
	mid, last := at[len(at)/2-1], at[len(at)-1]
	return float64(len(at)/2) / mid.Sub(first).Seconds(), float64(len(at)-len(at)/2) / last.Sub(mid).Seconds()
}

// drainBacklog lets the stand-in take sends again, waits for the first one (the lanes retry on
// their own backoff: nothing in the bridge notices the homeserver is back), then asks for an
// outbox_flush, so that every lane retries at once, and waits for every response.
func (b *bench) drainBacklog(ctx context.Context, bl *backlogSetup, waits []<-chan response) (*drainRun, error) {
	sends0 := bl.s.sends.Load()
	back := time.Now()
	bl.gate.status.Store(0)
	first, err := firstDelivery(ctx, bl.s, sends0)
	if err != nil {
		return nil, err
	}
	b.logf("  first delivery %s after the stand-in came back; flushing the outbox", first.Sub(back).Round(time.Millisecond))
	meter := startMeter(bl.r.proc)
	if err := b.flush(ctx, bl.r); err != nil {
		meter.stop()
		return nil, err
	}
	d := &drainRun{toFirst: first.Sub(back)}
	last, err := d.collect(ctx, waits, time.Minute+time.Duration(len(waits))*10*time.Millisecond)
	d.use = meter.stop()
	if err != nil {
		return nil, err
	}
	d.dur, d.toAll = last.Sub(first), last.Sub(back)
	d.firstHalf, d.secondHalf = d.halves(first)
	return d, nil
}

// firstDelivery waits until the stand-in took a send after the sends0 it had taken, and
// returns when.
func firstDelivery(ctx context.Context, s *standIn, sends0 int64) (time.Time, error) {
	deadline := time.After(firstDeliveryLimit)
	for s.sends.Load() == sends0 {
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-deadline:
			return time.Time{}, fmt.Errorf("no delivery within %s of the stand-in taking sends again", firstDeliveryLimit)
		case <-time.After(5 * time.Millisecond):
		}
	}
	return time.Now(), nil
}

// flush asks the bridge to retry every waiting request now (outbox_flush).
func (b *bench) flush(ctx context.Context, r *running) error {
	reqID := fmt.Sprintf("f%s-%d", b.tag, reqSeq.Add(1))
	payload, _ := json.Marshal(map[string]string{"id": reqID})
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, resp, err := r.mon.request(rctx, r.base+"/bridge/request/outbox_flush", reqID, payload)
	if err != nil {
		return fmt.Errorf("failed to flush the outbox: %w", err)
	}
	if resp.Status != "ok" {
		return fmt.Errorf("failed to flush the outbox: %s", resp.Error)
	}
	return nil
}

// collect waits, within limit, for the response to every request, counts them, and returns
// when the last arrived.
func (d *drainRun) collect(ctx context.Context, waits []<-chan response, limit time.Duration) (time.Time, error) {
	deadline := time.After(limit)
	var last time.Time
	for i, ch := range waits {
		select {
		case resp := <-ch:
			d.count(resp)
			last = maxTime(last, resp.At)
		case <-deadline:
			return last, fmt.Errorf("%d of %d requests unanswered %s after the drain began", len(waits)-i, len(waits), limit)
		case <-ctx.Done():
			return last, ctx.Err()
		}
	}
	return last, nil
}

// count counts a response, ok or failed.
func (d *drainRun) count(resp response) {
	d.answers = append(d.answers, resp.At)
	if resp.Status == "ok" {
		d.ok++
		return
	}
	d.failed++
	if d.firstErr == "" {
		d.firstErr = resp.Status + " " + resp.Error
	}
}

// backlogRows adds the scenario's rows and details.
func (b *bench) backlogRows(ref phase, refUse usage, q *outageRun, d *drainRun) {
	n := b.o.backlogN
	sec := "7 backlog, stand-in"
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("s to commit %d requests during the outage (publish → outbox)", n), Bridge: q.took.Seconds()})
	b.rep.add(row{Section: sec, Measure: "RSS MB before the outage (after the empty-outbox run)", Bridge: mb(q.before)})
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("RSS MB while %d wait", n), Bridge: mb(q.rss), Goal: "≤ 60"})
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("peak RSS MB while %d were queued", n), Bridge: mb(q.peak)})
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("%% of a CPU while %d wait", n), Bridge: q.idleCPU * 100})
	wait := "retry backoff: nothing flushes on recovery"
	if b.o.backlogStatus >= 500 {
		wait += "; in doubt, each retry waits for a sync"
	}
	b.rep.add(row{Section: sec, Measure: "s from the stand-in back to the first delivery", Bridge: d.toFirst.Seconds(), Note: wait})
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("drain msg/s, %d queued during an outage", n), Bridge: d.rate(), Reference: ref.rate(), RefName: "empty outbox", Goal: "within 10 % of an empty outbox", Note: "after outbox_flush"})
	b.rep.add(row{Section: sec, Measure: "CPU µs per message (user+system)", Bridge: float64(d.use.CPU.Microseconds()) / float64(n), Reference: float64(refUse.CPU.Microseconds()) / float64(len(ref.resp)), RefName: "empty outbox"})
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("s from the stand-in back to all %d answered", n), Bridge: d.toAll.Seconds()})
	b.rep.detail("backlog", "result", map[string]any{
		"requests": n, "send_status": b.o.backlogStatus, "sends_refused": q.refused,
		"queue_s": q.took.Seconds(), "queue_msg_per_s": finite(float64(n) / q.took.Seconds()),
		"waiting_rss": q.rss, "queueing_peak_rss": q.peak, "waiting_heap_inuse": q.heap, "waiting_cpu_share": q.idleCPU,
		"to_first_delivery_s": d.toFirst.Seconds(), "drain_s": d.dur.Seconds(), "to_all_answered_s": d.toAll.Seconds(),
		"drain_msg_per_s":            finite(d.rate()),
		"drain_msg_per_s_first_half": finite(d.firstHalf), "drain_msg_per_s_second_half": finite(d.secondHalf), "answered_ok": d.ok, "answered_error": d.failed,
		"drain_cpu_s": d.use.CPU.Seconds(), "drain_mallocs": d.use.Mallocs, "drain_bytes": d.use.Bytes, "drain_peak_rss": d.use.PeakRSS,
		"empty_outbox": phaseJSON(ref), "empty_outbox_cpu_s": refUse.CPU.Seconds(),
	})
}
