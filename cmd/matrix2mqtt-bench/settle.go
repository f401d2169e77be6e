package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// settleBusy is the share of the machine's CPU time above which a scenario waits to start.
const settleBusy = 0.25

// settle waits, before a scenario, until the machine is quiet or limit passed: Dendrite goes on
// working through its queues for a while after a load (with its JetStream on disk, seconds),
// and a scenario started then would measure that work too. It returns how long it waited and
// the share of CPU time that was busy in the last half second.
func settle(ctx context.Context, limit time.Duration) (time.Duration, float64, error) {
	start := time.Now()
	busy, total, err := cpuTimes()
	if err != nil {
		return 0, 0, err
	}
	for {
		select {
		case <-ctx.Done():
			return time.Since(start), 0, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		nextBusy, nextTotal, err := cpuTimes()
		if err != nil {
			return time.Since(start), 0, err
		}
		share := 0.0
		if nextTotal > total {
			share = float64(nextBusy-busy) / float64(nextTotal-total)
		}
		if share < settleBusy || time.Since(start) >= limit {
			return time.Since(start), share, nil
		}
		busy, total = nextBusy, nextTotal
	}
}

// cpuTimes returns the machine's busy and total CPU time, in clock ticks, from /proc/stat.
func cpuTimes() (busy, total uint64, err error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("failed to read CPU times: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0, errors.New("failed to read CPU times: unexpected /proc/stat")
	}
	for i, f := range fields[1:] {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("failed to read CPU times: %w", err)
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total, nil
}
