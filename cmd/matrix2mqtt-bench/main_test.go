package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestPercentiles(t *testing.T) {
	var l latencies
	for i := 1; i <= 100; i++ {
		l = append(l, time.Duration(i)*time.Millisecond)
	}
	if l.pct(50) != 50 || l.pct(95) != 95 || l.pct(99) != 99 || l.pct(100) != 100 {
		t.Fatalf("p50 %v p95 %v p99 %v max %v", l.pct(50), l.pct(95), l.pct(99), l.pct(100))
	}
	if !math.IsNaN(latencies(nil).pct(50)) {
		t.Fatal("empty set has a percentile")
	}
}

func TestShortDefaults(t *testing.T) {
	o, err := parseFlags([]string{"-short"})
	if err != nil {
		t.Fatal(err)
	}
	if o.n != 60 || len(o.concurrency) != 1 || o.concurrency[0] != 4 || o.roomCounts[1] != 30 || o.mediaN != 3 || len(o.scenarios) != len(allScenarios) {
		t.Fatalf("%+v", o)
	}
	if _, err := parseFlags([]string{"-scenarios", "delivered,nope"}); err == nil {
		t.Fatal("unknown scenario accepted")
	}
}

func TestReportJSONAndTable(t *testing.T) {
	r := newReport()
	r.add(row{Section: "s", Measure: "m", Bridge: 2, Reference: 4, RefName: "direct"})
	r.add(row{Section: "s", Measure: "not measured", Bridge: math.NaN(), Reference: math.NaN()})
	r.skip("e2ee", "skipped: E2EE not available")
	if r.Rows[0].Ratio != 0.5 {
		t.Fatalf("ratio %v", r.Rows[0].Ratio)
	}
	if _, err := json.Marshal(r); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	r.printTable(&out)
	if !strings.Contains(out.String(), "4.000 (direct)") || !strings.Contains(out.String(), "skipped: E2EE not available") {
		t.Fatal(out.String())
	}
}

// TestStandIn checks the endpoints the bridge needs at start, and that /send answers at once.
func TestStandIn(t *testing.T) {
	s := newStandIn(2)
	defer s.close()
	get := func(method, path string) int {
		req, _ := http.NewRequest(method, s.srv.URL+path, strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/_matrix/client/versions", 200},
		{"POST", "/_matrix/client/v3/login", 200},
		{"GET", "/_matrix/client/v3/account/whoami", 200},
		{"POST", "/_matrix/client/v3/user/@bot:x/filter", 200},
		{"GET", "/_matrix/client/v3/user/@bot:x/account_data/m.direct", 404},
		{"GET", "/_matrix/client/v3/sync", 200},
		{"PUT", "/_matrix/client/v3/rooms/!r:x/send/m.room.message/t1", 200},
		{"GET", "/_matrix/client/v3/nothing", 404},
	} {
		if got := get(c.method, c.path); got != c.status {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, got, c.status)
		}
	}
	if s.sends.Load() != 1 || len(s.unknownRequests()) != 1 {
		t.Fatalf("sends %d, unknown %v", s.sends.Load(), s.unknownRequests())
	}
}

func TestCPUTimes(t *testing.T) {
	busy, total, err := cpuTimes()
	if err != nil {
		t.Fatal(err)
	}
	if total == 0 || busy > total {
		t.Fatalf("busy %d of total %d", busy, total)
	}
	waited, share, err := settle(context.Background(), 0)
	if err != nil || waited < 500*time.Millisecond || share < 0 || share > 1 {
		t.Fatalf("settle with no time to wait = %s, %f, %v", waited, share, err)
	}
}
