package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// phase is one stretch of load from one side (the bridge or the direct client).
type phase struct {
	count, errors int
	firstErr      string
	dur           time.Duration // first request → last response
	resp          latencies     // publish (or PUT) → response with event_id
	seen          latencies     // publish (or PUT) → event in the watcher's /sync
	seenDur       time.Duration // first request → last event seen
	types         map[string]int
	lastID        string // the event of the last successful request
}

func (p *phase) merge(q phase) {
	p.count += q.count
	p.errors += q.errors
	if p.firstErr == "" {
		p.firstErr = q.firstErr
	}
	p.dur += q.dur
	if q.lastID != "" {
		p.lastID = q.lastID
	}
	p.seenDur += q.seenDur
	p.resp = append(p.resp, q.resp...)
	p.seen = append(p.seen, q.seen...)
	if p.types == nil {
		p.types = map[string]int{}
	}
	for k, v := range q.types {
		p.types[k] += v
	}
}

func (p phase) rate() float64     { return float64(len(p.resp)) / p.dur.Seconds() }
func (p phase) seenRate() float64 { return float64(len(p.seen)) / p.seenDur.Seconds() }

var reqSeq atomic.Int64

// sendPhase sends count messages with conc workers, worker k into rooms[k%len(rooms)], through
// the bridge r (when direct is nil) or with the direct client, and then waits until the watcher
// saw them.
func (b *bench) sendPhase(ctx context.Context, r *running, direct *mx, rooms []string, w *watcher, count, conc int) phase {
	type sent struct {
		t0, t1  time.Time
		eventID string
	}
	var mu sync.Mutex
	var out []sent
	p := phase{types: map[string]int{}}
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for k := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			room := rooms[k%len(rooms)]
			for ctx.Err() == nil {
				i := next.Add(1)
				if i > int64(count) {
					return
				}
				seq := reqSeq.Add(1)
				var s sent
				var err error
				if direct == nil {
					reqID := fmt.Sprintf("b%s-%d", b.tag, seq)
					payload, _ := json.Marshal(map[string]string{"id": reqID, "to": room, "text": fmt.Sprintf("Benchmark message %d through the bridge", seq)})
					rctx, cancel := context.WithTimeout(ctx, time.Minute)
					var resp response
					s.t0, resp, err = r.mon.request(rctx, r.base+"/bridge/request/send", reqID, payload)
					cancel()
					if err == nil && resp.Status != "ok" {
						err = fmt.Errorf("%s", resp.Error)
					}
					s.t1, s.eventID = resp.At, resp.EventID
				} else {
					content := map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("Benchmark message %d from the direct client", seq), "m.mentions": map[string]any{}}
					s.t0 = time.Now()
					s.eventID, err = direct.send(ctx, room, fmt.Sprintf("d%s-%d", b.tag, seq), content)
					s.t1 = time.Now()
				}
				mu.Lock()
				if err != nil {
					p.errors++
					if p.firstErr == "" {
						p.firstErr = shortErr(err)
					}
				} else {
					out = append(out, s)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	p.count = count
	var last time.Time
	ids := make([]string, 0, len(out))
	for _, s := range out {
		p.resp = append(p.resp, s.t1.Sub(s.t0))
		if s.t1.After(last) {
			last = s.t1
		}
		ids = append(ids, s.eventID)
	}
	p.dur = last.Sub(start)
	if w == nil {
		return p
	}
	w.waitAll(ids, 30*time.Second)
	var lastSeen time.Time
	for _, s := range out {
		if ev, ok := w.get(s.eventID); ok {
			p.seen = append(p.seen, ev.At.Sub(s.t0))
			p.types[ev.Type]++
			if ev.At.After(lastSeen) {
				lastSeen = ev.At
			}
		}
	}
	p.seenDur = lastSeen.Sub(start)
	return p
}

// main is the bridge of the Dendrite scenarios with its bot, the peer user, rooms shared by
// both, the peer's /sync watcher and the direct client (the bot's own registration device).
type mainSetup struct {
	bot, peer *account
	r         *running
	rooms     []string
	w         *watcher
	direct    *mx
	idleRSS   int64
	loadPeak  int64
}

func (b *bench) mainBridge(ctx context.Context) (*mainSetup, error) {
	if b.main != nil {
		return b.main, nil
	}
	bot, err := b.account(ctx, "bot")
	if err != nil {
		return nil, err
	}
	peer, err := b.account(ctx, "peer")
	if err != nil {
		return nil, err
	}
	n := 1
	for _, c := range b.o.concurrency {
		n = max(n, c)
	}
	rooms, took, err := sharedRooms(ctx, peer.cli, bot.cli, n, "Benchmark", false)
	if err != nil {
		return nil, fmt.Errorf("failed to create rooms: %w", err)
	}
	b.debugf("%d rooms created and joined in %s", n, took.Round(time.Millisecond))
	env := b.bridgeEnv("main", b.hs, bot.userID, bot.password, filepath.Join(b.dir, "data-main"), map[string]string{"AUTO_JOIN": peer.userID})
	r, err := b.startBridge("main", env)
	if err != nil {
		return nil, err
	}
	if _, err := waitRooms(r.mon, r.proc.started, len(rooms), nil, time.Minute); err != nil {
		return nil, err
	}
	m := &mainSetup{bot: bot, peer: peer, r: r, rooms: rooms, direct: bot.cli, w: startWatcher(peer.cli)}
	select {
	case <-m.w.ready:
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("the peer's /sync did not start")
	}
	// Idle: settled after the start, before any load.
	time.Sleep(b.settle())
	m.idleRSS, _ = r.proc.rss()
	b.main = m
	return m, nil
}

func (b *bench) settle() time.Duration {
	if b.o.short {
		return time.Second
	}
	return 3 * time.Second
}

// profile starts the profiles of the bridge if scenario is the profiled one; the returned func
// stops them.
func (b *bench) profile(scenario string, p *bridgeProc) func() {
	if b.o.profileOf != scenario || (b.o.cpuProfile == "" && b.o.memProfile == "") {
		return func() {}
	}
	stopCPU := func() {}
	if b.o.cpuProfile != "" {
		var err error
		if stopCPU, err = p.cpuProfile(b.o.cpuProfile); err != nil {
			b.logf("CPU profile: %v", err)
			stopCPU = func() {}
		}
	}
	return func() {
		stopCPU()
		if b.o.cpuProfile != "" {
			b.logf("CPU profile of the bridge (%s): %s", scenario, b.o.cpuProfile)
		}
		if b.o.memProfile != "" {
			if err := p.allocProfile(b.o.memProfile); err != nil {
				b.logf("allocation profile: %v", err)
			} else {
				b.logf("allocation profile of the bridge (%s): %s", scenario, b.o.memProfile)
			}
		}
	}
}

// delivered is scenario 1: the same messages through the bridge and from a direct client, on
// the same Dendrite, alternating.
func (b *bench) delivered(ctx context.Context) error {
	m, err := b.mainBridge(ctx)
	if err != nil {
		return err
	}
	meter := startMeter(m.r.proc)
	stopProfile := b.profile("delivered", m.r.proc)
	for _, conc := range b.o.concurrency {
		rooms := m.rooms[:conc]
		per := max(1, b.o.n/b.o.rounds)
		warm := max(1, min(20, per/2))
		b.sendPhase(ctx, m.r, nil, rooms, m.w, warm, conc)
		b.sendPhase(ctx, nil, m.direct, rooms, m.w, warm, conc)
		var viaBridge, direct phase
		for round := range b.o.rounds {
			pb := b.sendPhase(ctx, m.r, nil, rooms, m.w, per, conc)
			pd := b.sendPhase(ctx, nil, m.direct, rooms, m.w, per, conc)
			b.debugf("c=%d round %d: bridge %.1f msg/s, direct %.1f msg/s", conc, round+1, pb.rate(), pd.rate())
			viaBridge.merge(pb)
			direct.merge(pd)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		sec := fmt.Sprintf("1 delivered c=%d", conc)
		b.compareRows(sec, viaBridge, direct, "direct", "≥ 0.95", "≤ +1 ms")
		b.rep.detail("delivered", fmt.Sprintf("c%d", conc), map[string]any{
			"bridge": phaseJSON(viaBridge), "direct": phaseJSON(direct),
		})
		if viaBridge.errors+direct.errors > 0 {
			return fmt.Errorf("c=%d: %d bridge and %d direct errors (first: %s%s)", conc, viaBridge.errors, direct.errors, viaBridge.firstErr, direct.firstErr)
		}
	}
	stopProfile()
	u := meter.stop()
	m.loadPeak = u.PeakRSS
	return nil
}

// compareRows adds the rows comparing a bridge phase to its reference.
func (b *bench) compareRows(sec string, a, ref phase, refName, rateGoal, p50Goal string) {
	b.rep.add(row{Section: sec, Measure: "msg/s, publish → response", Bridge: a.rate(), Reference: ref.rate(), RefName: refName, Goal: rateGoal})
	b.rep.add(row{Section: sec, Measure: "msg/s, publish → seen in /sync", Bridge: a.seenRate(), Reference: ref.seenRate(), RefName: refName})
	for _, p := range []float64{50, 95, 99} {
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("p%.0f ms, publish → response", p), Bridge: a.resp.pct(p), Reference: ref.resp.pct(p), RefName: refName})
	}
	for _, p := range []float64{50, 95, 99} {
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("p%.0f ms, publish → seen in /sync", p), Bridge: a.seen.pct(p), Reference: ref.seen.pct(p), RefName: refName})
	}
	if p50Goal != "" {
		b.rep.add(row{Section: sec, Measure: "added p50 ms, publish → response", Bridge: a.resp.pct(50) - ref.resp.pct(50), Goal: p50Goal})
	}
}

func phaseJSON(p phase) map[string]any {
	return map[string]any{
		"messages": len(p.resp), "errors": p.errors, "seconds": p.dur.Seconds(), "msg_per_s": finite(p.rate()),
		"response": p.resp.summary(), "seen": p.seen.summary(), "seen_msg_per_s": finite(p.seenRate()), "seen_types": p.types,
	}
}

// inbound is scenario 3: a burst from the peer on Dendrite (origin_server_ts → MQTT, next to the
// peer's own /sync), and bursts of sync responses from the stand-in (response written → MQTT).
func (b *bench) inbound(ctx context.Context) error {
	m, err := b.mainBridge(ctx)
	if err != nil {
		return err
	}
	// Dendrite: the peer sends a burst over the shared rooms with 8 workers.
	n := b.o.inboundN
	var next atomic.Int64
	var mu sync.Mutex
	var ids []string
	var sendErr error
	var wg sync.WaitGroup
	start := time.Now()
	for k := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			room := m.rooms[k%len(m.rooms)]
			for {
				i := next.Add(1)
				if i > int64(n) || ctx.Err() != nil {
					return
				}
				evID, err := m.peer.cli.send(ctx, room, fmt.Sprintf("in%s-%d", b.tag, i), map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("Inbound message %d", i)})
				mu.Lock()
				if err != nil && sendErr == nil {
					sendErr = err
				} else if err == nil {
					ids = append(ids, evID)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if sendErr != nil {
		return fmt.Errorf("peer failed to send: %w", sendErr)
	}
	got := m.r.mon.waitInbound(ids, time.Minute)
	m.w.waitAll(ids, 30*time.Second)
	var viaBridge, viaSync latencies
	var lastBridge, lastSync time.Time
	for _, id := range ids {
		ev, ok := m.w.get(id)
		if !ok {
			continue
		}
		ts := time.UnixMilli(ev.TS)
		viaSync = append(viaSync, ev.At.Sub(ts))
		lastSync = maxTime(lastSync, ev.At)
		if at, ok := m.r.mon.inboundAt(id); ok {
			viaBridge = append(viaBridge, at.Sub(ts))
			lastBridge = maxTime(lastBridge, at)
		}
	}
	sec := "3 inbound, Dendrite"
	bRate, sRate := float64(len(viaBridge))/lastBridge.Sub(start).Seconds(), float64(len(viaSync))/lastSync.Sub(start).Seconds()
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("events/s, burst of %d from another user", n), Bridge: bRate, Reference: sRate, RefName: "sync client"})
	for _, p := range []float64{50, 95, 99} {
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("p%.0f ms, origin_server_ts → MQTT (ref: → /sync)", p), Bridge: viaBridge.pct(p), Reference: viaSync.pct(p), RefName: "sync client"})
	}
	b.rep.detail("inbound", "dendrite", map[string]any{"sent": len(ids), "published": got, "bridge": viaBridge.summary(), "sync_client": viaSync.summary(), "bridge_events_per_s": finite(bRate), "sync_events_per_s": finite(sRate)})
	if got < len(ids) {
		return fmt.Errorf("the bridge published %d of %d inbound events", got, len(ids))
	}
	return b.inboundStandIn(ctx)
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// standInSetup is the bridge on the homeserver stand-in, shared by the ceiling and the stand-in
// part of the inbound scenario.
type standInSetup struct {
	s *standIn
	r *running
}

func (b *bench) standInBridge() (*standInSetup, error) {
	if b.stand != nil {
		return b.stand, nil
	}
	s := newStandIn(max(b.o.lanes, b.o.burstRooms))
	env := b.bridgeEnv("standin", s.srv.URL, s.userID, "standin-password", filepath.Join(b.dir, "data-standin"), map[string]string{"E2EE": "false"})
	r, err := b.startBridge("standin", env)
	if err != nil {
		s.close()
		return nil, err
	}
	// The initial sync is handed over before the long poll that takes bursts.
	time.Sleep(500 * time.Millisecond)
	b.stand = &standInSetup{s: s, r: r}
	return b.stand, nil
}

func (b *bench) inboundStandIn(ctx context.Context) error {
	st, err := b.standInBridge()
	if err != nil {
		return err
	}
	one := func(rooms, size int) (latencies, time.Duration, error) {
		bu := st.s.newBurst(rooms, size)
		go func() {
			select {
			case st.s.bursts <- bu:
			case <-time.After(time.Minute):
			}
		}()
		var written time.Time
		select {
		case written = <-bu.written:
		case <-time.After(time.Minute):
			return nil, 0, fmt.Errorf("the bridge did not take the stand-in's sync response")
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		if got := st.r.mon.waitInbound(bu.ids, time.Minute); got < len(bu.ids) {
			return nil, 0, fmt.Errorf("the bridge published %d of %d events of a sync response", got, len(bu.ids))
		}
		var l latencies
		var last time.Time
		for _, id := range bu.ids {
			at, _ := st.r.mon.inboundAt(id)
			l = append(l, at.Sub(written))
			last = maxTime(last, at)
		}
		return l, last.Sub(written), nil
	}
	if _, _, err := one(b.o.burstRooms, b.o.burstSize); err != nil { // warm-up
		return err
	}
	meter := startMeter(st.r.proc)
	stopProfile := b.profile("inbound", st.r.proc)
	var all latencies
	var total time.Duration
	for range b.o.bursts {
		l, d, err := one(b.o.burstRooms, b.o.burstSize)
		if err != nil {
			return err
		}
		all = append(all, l...)
		total += d
	}
	// Single events: the latency of one event when the bridge is not busy with a batch.
	var single latencies
	for range b.o.singles {
		l, _, err := one(1, 1)
		if err != nil {
			return err
		}
		single = append(single, l...)
		time.Sleep(5 * time.Millisecond)
	}
	stopProfile()
	u := meter.stop()
	events := len(all)
	sec := "3 inbound, stand-in"
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("events/s, sync responses of %d events", b.o.burstRooms*b.o.burstSize), Bridge: float64(events) / total.Seconds(), Goal: "≥ 5000"})
	for _, p := range []float64{50, 95, 99} {
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("p%.0f ms, sync response written → MQTT, %d-event responses", p, b.o.burstRooms*b.o.burstSize), Bridge: all.pct(p)})
	}
	for _, p := range []float64{50, 95, 99} {
		goal := ""
		if p == 99 {
			goal = "≤ 2 ms"
		}
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("p%.0f ms, sync response written → MQTT, one event each", p), Bridge: single.pct(p), Goal: goal})
	}
	b.usageRows(sec, "event", u, events)
	b.rep.detail("inbound", "standin", map[string]any{"events": events, "seconds": total.Seconds(), "latency": all.summary(), "single_event_latency": single.summary(), "cpu_s": u.CPU.Seconds(), "mallocs": u.Mallocs, "bytes": u.Bytes})
	return nil
}

// usageRows adds CPU and allocations per unit of work.
func (b *bench) usageRows(sec, unit string, u usage, n int) {
	note := ""
	if b.o.inproc {
		note = "in-process: includes the benchmark"
	}
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("CPU µs per %s (user+system)", unit), Bridge: float64(u.CPU.Microseconds()) / float64(n), Note: note})
	if u.Measured {
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("allocations per %s", unit), Bridge: float64(u.Mallocs) / float64(n), Note: note})
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("KB allocated per %s", unit), Bridge: float64(u.Bytes) / 1024 / float64(n), Note: note})
	}
}

// ceiling is scenario 2: durable sends against the stand-in that answers /send at once.
func (b *bench) ceiling(ctx context.Context) error {
	st, err := b.standInBridge()
	if err != nil {
		return err
	}
	rooms := st.s.rooms[:b.o.lanes]
	load := func(n int) phase {
		return b.sendPhase(ctx, st.r, nil, rooms, nil, n, b.o.window)
	}
	warm := load(min(1000, b.o.ceilingN/4))
	if warm.errors > 0 {
		return fmt.Errorf("warm-up: %d errors (first: %s)", warm.errors, warm.firstErr)
	}
	// One request at a time: the bridge's own latency, nothing queued.
	single := b.sendPhase(ctx, st.r, nil, rooms[:1], nil, b.o.singles*3, 1)
	if single.errors > 0 {
		return fmt.Errorf("one at a time: %d errors (first: %s)", single.errors, single.firstErr)
	}
	sends0 := st.s.sends.Load()
	meter := startMeter(st.r.proc)
	stopProfile := b.profile("ceiling", st.r.proc)
	p := load(b.o.ceilingN)
	stopProfile()
	u := meter.stop()
	if p.errors > 0 {
		return fmt.Errorf("%d errors (first: %s)", p.errors, p.firstErr)
	}
	sec := "2 ceiling, stand-in"
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("durable msg/s (%d in flight, %d rooms)", b.o.window, b.o.lanes), Bridge: p.rate(), Goal: "≥ 5000"})
	for _, q := range []float64{50, 95, 99} {
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("p%.0f ms, publish → response", q), Bridge: p.resp.pct(q)})
	}
	b.usageRows(sec, "message", u, len(p.resp))
	b.rep.add(row{Section: sec, Measure: "peak RSS MB under this load", Bridge: mb(u.PeakRSS)})
	for _, q := range []float64{50, 95, 99} {
		goal := ""
		if q == 50 {
			goal = "≤ 1 ms"
		}
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("p%.0f ms, publish → response, one at a time", q), Bridge: single.resp.pct(q), Goal: goal})
	}
	b.rep.detail("ceiling", "result", map[string]any{
		"load": phaseJSON(p), "one_at_a_time": phaseJSON(single), "cpu_s": u.CPU.Seconds(), "mallocs": u.Mallocs, "bytes": u.Bytes, "peak_rss": u.PeakRSS,
		"sends_seen_by_standin": st.s.sends.Load() - sends0, "unknown_requests": st.s.unknownRequests(),
	})
	return nil
}
