package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// e2eeCeilingSection is the report section of the E2EE ceiling.
const e2eeCeilingSection = "7 e2ee ceiling, stand-in"

// e2eeCeiling is scenario 7: the ceiling's durable sends from a bridge with E2EE on, into the
// E2EE stand-in's encrypted rooms, whose other member has as many devices as the largest of
// -devices. The first message of a room shares its Megolm session; after that each message is
// one Megolm encryption, and every 100th of a room shares a new session (the default rotation).
func (b *bench) e2eeCeiling(ctx context.Context) error {
	devices := slices.Max(b.o.devices)
	s, err := newE2EEStandIn(b.o.lanes, devices)
	if err != nil {
		return fmt.Errorf("failed to start the E2EE stand-in: %w", err)
	}
	defer s.close()
	env := b.bridgeEnv("e2eeceiling", s.srv.URL, s.userID, "standin-password", filepath.Join(b.dir, "data-e2eeceiling"), map[string]string{
		"E2EE": "true", "E2EE_PICKLE_KEY": "matrix2mqtt-bench-pickle-key",
	})
	r, err := b.startBridge("e2eeceiling", env)
	if err != nil {
		return err
	}
	defer b.closeBridge(r)
	status, err := e2eeReady(r, s)
	if err != nil {
		return err
	}
	if err := b.e2eeCeilingRun(ctx, r, s, devices); err != nil {
		return err
	}
	b.rep.detail("e2ee-ceiling", "bridge_e2ee", status)
	b.rep.detail("e2ee-ceiling", "standin", map[string]any{
		"key_queries": s.e2ee.queries.Load(), "one_time_keys_claimed": s.e2ee.claims.Load(), "to_device_requests": s.e2ee.toDevice.Load(),
		"room_keys_backed_up": s.e2ee.backedUp.Load(), "sends": s.sends.Load(), "encrypted_sends": s.encryptedSends.Load(),
		"unknown_requests": s.unknownRequests(),
	})
	return nil
}

// e2eeReady checks that the bridge on the stand-in runs with E2EE set up as on a first start
// against a homeserver (cross-signed device, key backup), and that it listed the stand-in's
// rooms as encrypted, which it does after the initial sync; it returns the bridge's E2EE status.
func e2eeReady(r *running, s *standIn) (wire.E2EEStatus, error) {
	var info wire.Info
	if err := json.Unmarshal(r.mon.latest("bridge/info"), &info); err != nil {
		return info.E2EE, fmt.Errorf("failed to read bridge/info: %w", err)
	}
	if info.E2EE.Status != "verified" || !info.E2EE.KeyBackup {
		return info.E2EE, fmt.Errorf("E2EE on the stand-in is %s (key backup %t, problem %q), not verified with a key backup; unknown requests: %v",
			info.E2EE.Status, info.E2EE.KeyBackup, info.E2EE.Problem, s.unknownRequests())
	}
	if _, err := waitRooms(r.mon, r.proc.started, len(s.rooms), s.rooms, time.Minute); err != nil {
		return info.E2EE, err
	}
	return info.E2EE, nil
}

// e2eeCeilingRun sends the first message of two rooms one at a time, warms up, measures the
// load, checks that every message was encrypted for the peer's devices, and reports.
func (b *bench) e2eeCeilingRun(ctx context.Context, r *running, s *standIn, devices int) error {
	rooms := s.rooms
	// The first room: the peer's device keys fetched, one-time keys claimed, Olm sessions made,
	// the Megolm session shared. The second: shared over the Olm sessions made for the first.
	var firsts []phase
	for _, room := range rooms[:min(2, len(rooms))] {
		p := b.sendPhase(ctx, r, nil, []string{room}, nil, 1, 1)
		if p.errors > 0 {
			return fmt.Errorf("first message: %s", p.firstErr)
		}
		firsts = append(firsts, p)
	}
	load := func(n int) phase { return b.sendPhase(ctx, r, nil, rooms, nil, n, b.o.window) }
	if warm := load(min(1000, b.o.ceilingN/4)); warm.errors > 0 {
		return fmt.Errorf("warm-up: %d errors (first: %s)", warm.errors, warm.firstErr)
	}
	toDevice0 := s.e2ee.toDevice.Load()
	meter := startMeter(r.proc)
	stopProfile := b.profile("e2ee-ceiling", r.proc)
	p := load(b.o.ceilingN)
	stopProfile()
	u := meter.stop()
	if p.errors > 0 {
		return fmt.Errorf("%d errors (first: %s)", p.errors, p.firstErr)
	}
	if err := checkEncrypted(s, devices); err != nil {
		return err
	}
	b.e2eeCeilingRows(p, firsts, u, s.e2ee.toDevice.Load()-toDevice0, devices)
	return nil
}

// checkEncrypted fails unless every send reached the stand-in as m.room.encrypted, every one of
// the peer's devices got room keys, and its first device can decrypt a message with them.
func checkEncrypted(s *standIn, devices int) error {
	if plain := s.sends.Load() - s.encryptedSends.Load(); plain > 0 {
		return fmt.Errorf("%d messages reached the encrypted rooms unencrypted", plain)
	}
	if got := s.e2ee.devicesWithKeys(); got < devices {
		return fmt.Errorf("only %d of the peer's %d devices got room keys (unknown requests: %v)", got, devices, s.unknownRequests())
	}
	return s.e2ee.checkDecryptable()
}

// e2eeCeilingRows reports the load p, the first messages, the bridge's usage under the load
// and the Megolm sessions it shared meanwhile.
func (b *bench) e2eeCeilingRows(p phase, firsts []phase, u usage, shares int64, devices int) {
	sec := e2eeCeilingSection
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("durable msg/s (%d in flight, %d rooms, %d recipient devices)", b.o.window, b.o.lanes, devices), Bridge: p.rate(), Goal: "≥ 2000"})
	for _, q := range []float64{50, 95, 99} {
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("p%.0f ms, publish → response", q), Bridge: p.resp.pct(q)})
	}
	b.usageRows(sec, "message", u, len(p.resp))
	b.rep.add(row{Section: sec, Measure: "peak RSS MB under this load", Bridge: mb(u.PeakRSS)})
	b.rep.add(row{Section: sec, Measure: "Megolm sessions shared under this load (to-device requests)", Bridge: float64(shares)})
	measures := []string{
		fmt.Sprintf("first message ms, publish → response (keys of %d devices fetched and claimed, session shared)", devices),
		"first message in a second room ms (session shared over the Olm sessions)",
	}
	for i, ms := range firstMS(firsts) {
		b.rep.add(row{Section: sec, Measure: measures[i], Bridge: ms})
	}
	b.rep.detail("e2ee-ceiling", "result", map[string]any{
		"load": phaseJSON(p), "cpu_s": u.CPU.Seconds(), "mallocs": u.Mallocs, "bytes": u.Bytes, "peak_rss": u.PeakRSS,
		"sessions_shared": shares, "first_messages_ms": firstMS(firsts),
	})
}

// firstMS is the publish → response time of each one-message phase, in milliseconds.
func firstMS(firsts []phase) []float64 {
	var out []float64
	for _, f := range firsts {
		out = append(out, f.resp.pct(50))
	}
	return out
}
