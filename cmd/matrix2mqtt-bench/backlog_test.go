package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestBacklogAndCPUFlags(t *testing.T) {
	o, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.backlogN != 100000 || o.backlogStatus != 429 || o.cpus != 0 || bridgeMode(o) != "subprocess" {
		t.Fatalf("defaults: %+v", o)
	}
	if o, err = parseFlags([]string{"-short", "-cpus", "1", "-backlog-status", "503"}); err != nil {
		t.Fatal(err)
	}
	if o.backlogN != 2000 || o.backlogStatus != 503 || !strings.HasPrefix(bridgeMode(o), "subprocess on 1 CPU(s) (") {
		t.Fatalf("-short -cpus 1: %+v, %q", o, bridgeMode(o))
	}
	for _, bad := range [][]string{
		{"-backlog-status", "500"},
		{"-backlog-n", "-5"},
		{"-cpus", "-1"},
		{"-cpus", "1", "-inproc"},
		{"-cpus", "99999"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestOutage checks that the gate refuses only /send while it is down, as the scenario needs.
func TestOutage(t *testing.T) {
	s := newStandIn(1)
	defer s.close()
	gate := &outage{next: s.srv.Config.Handler}
	front := httptest.NewServer(gate)
	defer front.Close()
	do := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, front.URL+path, strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	send := "/_matrix/client/v3/rooms/!r:x/send/m.room.message/t1"
	gate.status.Store(http.StatusTooManyRequests)
	if code, body := do("PUT", send); code != 429 || !strings.Contains(body, "M_LIMIT_EXCEEDED") {
		t.Errorf("send while down: %d %s", code, body)
	}
	gate.status.Store(http.StatusServiceUnavailable)
	if code, body := do("PUT", send); code != 503 || !strings.Contains(body, "M_UNKNOWN") {
		t.Errorf("send while down: %d %s", code, body)
	}
	if code, _ := do("GET", "/_matrix/client/versions"); code != 200 {
		t.Errorf("versions while down: %d", code)
	}
	gate.status.Store(0)
	if code, _ := do("PUT", send); code != 200 {
		t.Errorf("send after the outage: %d", code)
	}
	if s.sends.Load() != 1 || gate.refused.Load() != 2 {
		t.Fatalf("sends %d, refused %d", s.sends.Load(), gate.refused.Load())
	}
}

func TestChildCmd(t *testing.T) {
	b := &bridgeProc{env: map[string]string{"LOG_LEVEL": "warn"}}
	if cmd := b.childCmd("/bench"); !slices.Equal(cmd.Args, []string{"/bench", childArg}) || !slices.Contains(cmd.Env, "LOG_LEVEL=warn") {
		t.Fatalf("unconfined: %v", cmd.Args)
	}
	b.cpus = 1
	cmd := b.childCmd("/bench")
	if cmd.Env[len(cmd.Env)-1] != "GOMAXPROCS=1" || !slices.Contains(cmd.Env, "LOG_LEVEL=warn") {
		t.Fatalf("env %v", cmd.Env[len(cmd.Env)-3:])
	}
	if strings.Contains(bridgeMode(&options{cpus: 1}), "taskset") && !slices.Equal(cmd.Args[1:], []string{"-c", "0", "/bench", childArg}) {
		t.Fatalf("args %v", cmd.Args)
	}
	if cpuList(1) != "0" || cpuList(4) != "0-3" {
		t.Fatal(cpuList(1), cpuList(4))
	}
}
