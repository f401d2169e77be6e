package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// faultRooms is how many rooms the faults scenario sends to: one lane each in the bridge.
const faultRooms = 3

// faultSetup is the bridge of the faults scenario, behind the fault proxy, with its rooms and
// the peer that reads them back.
type faultSetup struct {
	proxy *faultProxy
	r     *running
	bot   *account
	peer  *account
	rooms []string
}

// faultRun is one burst of sends through the fault proxy, and what the rooms show of it.
type faultRun struct {
	label    string
	sent     int
	answered int
	failed   int
	firstErr string
	repeats  int64 // answers beyond the first for a request id
	dur      time.Duration
	lost     int
	doubled  int
	late     int // out of publish order
	mismatch int // answered with an event ID that is not the message's in the room
	proxy    faultCounts
}

// faults is scenario 9: the bridge's homeserver URL is a proxy in front of Dendrite that
// fails a quarter of the sends (502 before forwarding, 504 or a cut connection after it),
// holds 1 in 100 for 3 s and fails 5 % of the syncs (defaultFaults). The same burst of sends
// goes through it with faults off and on; each room is read back as its other member sees it.
// Before that, txnprobe.go measures what Dendrite does with a repeated transaction ID.
func (b *bench) faults(ctx context.Context) error {
	if b.env == nil {
		b.rep.skip("9 faults", "skipped: "+errNeedsStack.Error())
		return nil
	}
	fs, err := b.faultBridge(ctx)
	if err != nil {
		return err
	}
	defer func() {
		_ = b.closeBridge(fs.r)
		fs.proxy.close()
	}()
	if err := b.faultProbe(ctx, fs); err != nil {
		return err
	}
	if warm := b.faultBurst(ctx, fs, "warm", max(6, b.o.faultsN/20), false); warm.failed > 0 {
		return fmt.Errorf("warm-up: %d of %d failed (first: %s)", warm.failed, warm.sent, warm.firstErr)
	}
	clean := b.faultBurst(ctx, fs, "clean", b.o.faultsN, false)
	if _, _, err := settle(ctx, 10*time.Second); err != nil {
		b.logf("could not tell whether the machine is quiet: %v", err)
	}
	faulty := b.faultBurst(ctx, fs, "faulty", b.o.faultsN, true)
	b.faultRows(clean, faulty)
	for _, run := range []faultRun{clean, faulty} {
		if run.failed+run.lost+run.doubled+run.late+run.mismatch > 0 || run.repeats > 0 {
			return fmt.Errorf("%s run: %d failed (first: %s), %d lost, %d doubled, %d out of order, %d wrong event IDs, %d repeated answers",
				run.label, run.failed, run.firstErr, run.lost, run.doubled, run.late, run.mismatch, run.repeats)
		}
	}
	return ctx.Err()
}

// faultBridge registers a bot and a peer, creates the rooms, and starts a bridge whose
// homeserver is the fault proxy.
func (b *bench) faultBridge(ctx context.Context) (*faultSetup, error) {
	bot, err := b.account(ctx, "faultbot")
	if err != nil {
		return nil, err
	}
	peer, err := b.account(ctx, "faultpeer")
	if err != nil {
		return nil, err
	}
	rooms, _, err := sharedRooms(ctx, peer.cli, bot.cli, faultRooms, "Faults", false)
	if err != nil {
		return nil, fmt.Errorf("failed to create rooms: %w", err)
	}
	proxy := newFaultProxy(b.hs, defaultFaults, b.o.faultsSeed)
	env := b.bridgeEnv("faults", proxy.srv.URL, bot.userID, bot.password, filepath.Join(b.dir, "data-faults"), map[string]string{"E2EE": "false"})
	r, err := b.startBridge("faults", env)
	if err != nil {
		proxy.close()
		return nil, err
	}
	if _, err := waitRooms(r.mon, r.proc.started, len(rooms), nil, time.Minute); err != nil {
		_ = b.closeBridge(r)
		proxy.close()
		return nil, err
	}
	return &faultSetup{proxy: proxy, r: r, bot: bot, peer: peer, rooms: rooms}, nil
}

// faultProbe measures what Dendrite does with a repeated transaction ID (txnprobe.go), on
// Dendrite itself, with the bot's own registration device in a room of its own.
func (b *bench) faultProbe(ctx context.Context, fs *faultSetup) error {
	room, err := fs.bot.cli.createRoom(ctx, "Transaction ID probe", nil, false)
	if err != nil {
		return fmt.Errorf("failed to create the probe room: %w", err)
	}
	tries := 8
	if b.o.short {
		tries = 4
	}
	p, err := probeTxn(ctx, fs.bot.cli, room, b.tag, tries)
	if err != nil {
		return err
	}
	sec := "9 faults, txn ID on Dendrite"
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("same txn repeated after the first returned: duplicated (of %d)", tries), Bridge: float64(p.AfterCompletion)})
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("same txn sent twice at once: duplicated (of %d)", tries), Bridge: float64(p.WhileInFlight)})
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("same txn repeated after the client cut the first (%d cut before the answer): duplicated (of %d)", p.Cancelled, tries), Bridge: float64(p.AfterCancel)})
	b.rep.add(row{Section: sec, Measure: "ms from the cut until a cut request showed in the room, longest", Bridge: ms(p.StoredAfter)})
	b.rep.detail("faults", "txn_probe", p)
	return nil
}

// faultBurst publishes n sends over the rooms at once (QoS 1, with ids), waits for every
// answer, and reads the rooms back.
func (b *bench) faultBurst(ctx context.Context, fs *faultSetup, label string, n int, faulty bool) faultRun {
	run := faultRun{label: label, sent: n}
	tag := label + b.tag
	fs.proxy.setFaults(faulty)
	strays := fs.r.mon.strays.Load()
	answers := make([]<-chan response, n)
	start := time.Now()
	for i := range n {
		reqID := fmt.Sprintf("%s-%d", tag, i)
		payload, _ := json.Marshal(map[string]string{"id": reqID, "to": fs.rooms[i%len(fs.rooms)], "text": faultBody(tag, i%len(fs.rooms), i)})
		answers[i] = fs.r.mon.expect(reqID)
		if tok := fs.r.mon.cli.Publish(fs.r.base+"/bridge/request/send", 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			run.note(fmt.Sprintf("publish %s: %v", reqID, tok.Error()))
		}
	}
	limit := time.After(max(2*time.Minute, time.Duration(n)*2*time.Second))
	events := map[int]string{}
	var last time.Time
	for i, ch := range answers {
		select {
		case resp := <-ch:
			if resp.Status != "ok" {
				run.note(fmt.Sprintf("%s-%d: %s", tag, i, resp.Error))
				continue
			}
			run.answered++
			events[i] = resp.EventID
			last = maxTime(last, resp.At)
		case <-limit:
			run.note(fmt.Sprintf("%s-%d: no answer", tag, i))
		case <-ctx.Done():
			run.note(ctx.Err().Error())
		}
	}
	run.dur = last.Sub(start)
	run.proxy = fs.proxy.snapshot()
	fs.proxy.setFaults(false)
	time.Sleep(2 * time.Second) // a late copy, if any, is in the room by now
	run.repeats = fs.r.mon.strays.Load() - strays
	if err := b.readBack(ctx, fs, tag, events, &run); err != nil {
		run.note(err.Error())
	}
	b.debugf("faults %s: %d sends in %s, %+v", label, n, run.dur.Round(time.Millisecond), run.proxy)
	return run
}

// note counts a failed request, keeping the first reason.
func (r *faultRun) note(reason string) {
	r.failed++
	if r.firstErr == "" {
		r.firstErr = reason
	}
}

// faultBody is the text of message seq to room r in the burst tag.
func faultBody(tag string, r, seq int) string { return fmt.Sprintf("%s %d %06d", tag, r, seq) }

// readBack reads each room as the peer sees it and counts the burst's messages that are
// missing, doubled, out of publish order, or not the event their answer named.
func (b *bench) readBack(ctx context.Context, fs *faultSetup, tag string, events map[int]string, run *faultRun) error {
	seen := map[int]int{}
	for _, room := range fs.rooms {
		highest := -1
		err := eachMessage(ctx, fs.peer.cli, room, func(body, eventID string) {
			fields := strings.Fields(body)
			if len(fields) != 3 || fields[0] != tag {
				return
			}
			seq, _ := strconv.Atoi(fields[2])
			seen[seq]++
			if seq < highest {
				run.late++
			}
			highest = max(highest, seq)
			if want, ok := events[seq]; ok && want != eventID && seen[seq] == 1 {
				run.mismatch++
			}
		})
		if err != nil {
			return err
		}
	}
	for i := range run.sent {
		switch n := seen[i]; {
		case n == 0:
			run.lost++
		case n > 1:
			run.doubled += n - 1
		}
	}
	return nil
}

// faultRows adds the rows of the faults scenario.
func (b *bench) faultRows(clean, faulty faultRun) {
	sec := fmt.Sprintf("9 faults, seed %d", b.o.faultsSeed)
	n := faulty.sent
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("s, %d sends over %d rooms, publish → last answer", n, faultRooms), Bridge: faulty.dur.Seconds(), Reference: clean.dur.Seconds(), RefName: "no faults", Goal: "≤ 3×"})
	b.rep.add(row{Section: sec, Measure: "msg/s", Bridge: float64(faulty.answered) / faulty.dur.Seconds(), Reference: float64(clean.answered) / clean.dur.Seconds(), RefName: "no faults"})
	f := faulty.proxy
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("sends failed by the proxy (502 before / 504 after / cut after), of %d sends seen", f.Sends),
		Bridge: float64(f.SendFaults[faultNames[badGateway]] + f.SendFaults[faultNames[gatewayTimeout]] + f.SendFaults[faultNames[cutConnection]]),
		Note:   fmt.Sprintf("%d / %d / %d", f.SendFaults[faultNames[badGateway]], f.SendFaults[faultNames[gatewayTimeout]], f.SendFaults[faultNames[cutConnection]])})
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("sends stalled %s", defaultFaults.StallFor), Bridge: float64(f.Stalls)})
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("syncs failed (502), of %d", f.Syncs), Bridge: float64(f.SyncFaults)})
	for _, c := range []struct {
		measure string
		faulty  int
		clean   int
	}{
		{"requests not answered ok", faulty.failed, clean.failed},
		{"requests answered more than once", int(faulty.repeats), int(clean.repeats)},
		{"messages lost", faulty.lost, clean.lost},
		{"messages doubled", faulty.doubled, clean.doubled},
		{"messages out of order", faulty.late, clean.late},
		{"answers naming another event", faulty.mismatch, clean.mismatch},
	} {
		b.rep.add(row{Section: sec, Measure: c.measure, Bridge: float64(c.faulty), Note: fmt.Sprintf("no faults: %d", c.clean), Goal: "0"})
	}
	b.rep.detail("faults", "seed", b.o.faultsSeed)
	b.rep.detail("faults", "plan", defaultFaults)
	for _, run := range []faultRun{clean, faulty} {
		b.rep.detail("faults", run.label, map[string]any{
			"sent": run.sent, "answered": run.answered, "failed": run.failed, "first_error": run.firstErr, "seconds": run.dur.Seconds(),
			"repeats": run.repeats, "lost": run.lost, "doubled": run.doubled, "out_of_order": run.late, "mismatched": run.mismatch, "proxy": run.proxy,
		})
	}
}
