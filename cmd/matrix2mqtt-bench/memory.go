package main

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"time"
)

// memory is scenario 5: RSS idle, under load and with many joined rooms, and the time from
// process start to online with a warm store.
func (b *bench) memory(ctx context.Context) error {
	m, err := b.mainBridge(ctx)
	if err != nil {
		return err
	}
	sec := "5 memory, start-up"
	if b.o.inproc {
		b.rep.add(row{Section: sec, Measure: "RSS figures are of the benchmark process (-inproc)", Bridge: nan})
	}
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("RSS MB idle (%d rooms)", len(m.rooms)), Bridge: mb(m.idleRSS), Goal: "≤ 30"})
	if m.loadPeak > 0 {
		b.rep.add(row{Section: sec, Measure: "peak RSS MB under the delivered load", Bridge: mb(m.loadPeak)})
	}
	if b.stand != nil {
		_, peak := b.stand.r.proc.rss()
		b.rep.add(row{Section: sec, Measure: "peak RSS MB (VmHWM) after ceiling and inbound stand-in load", Bridge: mb(peak), Goal: "≤ 80"})
	}
	toState, toInfo, err := b.warmStarts(m.r, 3)
	if err != nil {
		return err
	}
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("start-up ms to online, warm store, %d rooms (median of 3)", len(m.rooms)), Bridge: toState})
	b.rep.add(row{Section: sec, Measure: fmt.Sprintf("start-up ms to online + info, warm store, %d rooms", len(m.rooms)), Bridge: toInfo, Goal: "≤ 1000"})
	b.rep.detail("memory", "idle_rss", m.idleRSS)
	b.rep.detail("memory", "load_peak_rss", m.loadPeak)

	if b.env == nil {
		b.rep.skip(sec, "rooms: skipped: "+errNeedsStack.Error())
		return nil
	}
	bot, err := b.account(ctx, "roomsbot")
	if err != nil {
		return err
	}
	have := 0
	for _, count := range b.o.roomCounts {
		_, took, err := sharedRooms(ctx, m.peer.cli, bot.cli, count-have, "Benchmark room", false)
		if err != nil {
			return fmt.Errorf("creating rooms: %w", err)
		}
		b.logf("  %d rooms created and joined on the homeserver in %s (%.1f rooms/s)", count-have, took.Round(time.Millisecond), float64(count-have)/took.Seconds())
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("setup: %d more rooms created and joined, s", count-have), Bridge: took.Seconds(), Note: "homeserver, not the bridge"})
		have = count

		// Reference, before the bridge: the same initial sync (the bridge's filter) by a plain
		// client. Going first, it meets the homeserver's caches cold.
		syncStart := time.Now()
		if err := bot.cli.do(ctx, "GET", "/_matrix/client/v3/sync?timeout=0&filter="+url.QueryEscape(bridgeFilter), nil, nil); err != nil {
			return fmt.Errorf("reference initial sync: %w", err)
		}
		initialSync := time.Since(syncStart)

		name := fmt.Sprintf("rooms%d", count)
		env := b.bridgeEnv(name, b.hs, bot.userID, bot.password, filepath.Join(b.dir, "data-"+name), nil)
		r, err := b.startBridge(name, env)
		if err != nil {
			return err
		}
		listed, err := waitRooms(r.mon, r.proc.started, count, nil, 5*time.Minute)
		if err != nil {
			b.closeBridge(r)
			return err
		}
		time.Sleep(b.settle())
		coldRSS, coldPeak := r.proc.rss()
		wState, wInfo, err := b.warmStarts(r, 1)
		if err != nil {
			b.closeBridge(r)
			return err
		}
		if _, err := waitRooms(r.mon, r.proc.started, count, nil, 5*time.Minute); err != nil {
			b.closeBridge(r)
			return err
		}
		time.Sleep(b.settle())
		warmRSS, warmPeak := r.proc.rss()
		if err := b.closeBridge(r); err != nil {
			return err
		}
		goal := ""
		if count >= 1000 {
			goal = "≤ 80"
		}
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("RSS MB with %d rooms, warm start, settled", count), Bridge: mb(warmRSS), Goal: goal})
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("RSS MB with %d rooms, first start (initial sync), settled", count), Bridge: mb(coldRSS)})
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("peak RSS MB, first start with %d rooms", count), Bridge: mb(coldPeak)})
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("first start with %d rooms: s to all rooms listed", count), Bridge: listed.Seconds(), Reference: initialSync.Seconds(), RefName: "initial /sync"})
		b.rep.add(row{Section: sec, Measure: fmt.Sprintf("start-up ms to online + info, warm store, %d rooms", count), Bridge: wInfo, Goal: "≤ 1000"})
		b.rep.detail("memory", name, map[string]any{
			"rooms": count, "create_s": took.Seconds(), "first_start_listed_s": listed.Seconds(), "reference_initial_sync_s": initialSync.Seconds(),
			"cold_rss": coldRSS, "cold_peak": coldPeak, "warm_rss": warmRSS, "warm_peak": warmPeak,
			"warm_to_online_ms": wState, "warm_to_info_ms": wInfo,
		})
	}
	return nil
}

// warmStarts stops and starts r n times and returns the median times (ms) from process start
// to `online` and to online + info.
func (b *bench) warmStarts(r *running, n int) (toState, toInfo float64, err error) {
	var states, infos []float64
	for range n {
		if err := b.stopBridge(r); err != nil {
			return 0, 0, err
		}
		if err := b.restart(r); err != nil {
			return 0, 0, err
		}
		states = append(states, ms(r.toState))
		infos = append(infos, ms(max(r.toState, r.toInfo)))
	}
	slices.Sort(states)
	slices.Sort(infos)
	return states[len(states)/2], infos[len(infos)/2], nil
}

// bridgeFilter is the sync filter of the bridge (matrix/sync.go): no presence, no ephemeral
// events, 50 timeline events per room.
const bridgeFilter = `{"presence":{"not_types":["*"]},"room":{"ephemeral":{"not_types":["*"]},"timeline":{"limit":50}}}`
