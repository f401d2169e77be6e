package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

// TestFaultProxy checks each fault against a fake homeserver: a 502 is not forwarded, a 504 and
// a cut connection are (the homeserver took the request), and the same seed draws the same
// faults.
func TestFaultProxy(t *testing.T) {
	var forwarded atomic.Int64
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		forwarded.Add(1)
		writeJSON(w, 200, map[string]any{"event_id": "$e"})
	}))
	defer hs.Close()
	outcomes := func(seed uint64, on bool) []string {
		p := newFaultProxy(hs.URL, faultPlan{SendFail: 1, SyncFail: 1}, seed)
		defer p.close()
		p.setFaults(on)
		hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		var out []string
		for i := range 30 {
			before := forwarded.Load()
			req, _ := http.NewRequest(http.MethodPut, p.srv.URL+fmt.Sprintf("/_matrix/client/v3/rooms/!r:x/send/m.room.message/t%d", i), strings.NewReader("{}"))
			resp, err := hc.Do(req)
			outcome := "cut"
			if err == nil {
				outcome = resp.Status[:3]
				resp.Body.Close()
			}
			out = append(out, fmt.Sprintf("%s/%d", outcome, forwarded.Load()-before))
		}
		resp, err := hc.Get(p.srv.URL + "/_matrix/client/v3/sync")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		out = append(out, "sync "+resp.Status[:3])
		if c := p.snapshot(); on && (c.Sends != 30 || c.Syncs != 1 || c.SyncFaults != 1) {
			t.Errorf("counts %+v", c)
		}
		return out
	}
	got := outcomes(7, true)
	for _, want := range []string{"502/0", "504/1", "cut/1", "sync 502"} {
		if !slices.Contains(got, want) {
			t.Errorf("no %q among %v", want, got)
		}
	}
	for _, o := range got[:30] {
		if o != "502/0" && o != "504/1" && o != "cut/1" {
			t.Errorf("unexpected outcome %q", o)
		}
	}
	if again := outcomes(7, true); !slices.Equal(got, again) {
		t.Errorf("seed 7 drew %v, then %v", got, again)
	}
	for _, o := range outcomes(7, false) {
		if o != "200/1" && o != "sync 200" {
			t.Errorf("faults off: %q", o)
		}
	}
}
