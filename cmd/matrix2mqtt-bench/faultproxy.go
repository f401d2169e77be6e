package main

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// fault is what the fault proxy does with one request.
type fault int

const (
	passThrough    fault = iota
	badGateway           // 502 at once, nothing forwarded: the request never reached the homeserver
	gatewayTimeout       // forwarded, the homeserver's answer dropped, 504: it took the request
	cutConnection        // forwarded, the answer dropped, the connection closed: it took the request
	faultKinds
)

var faultNames = [faultKinds]string{"passed", "502 before forwarding", "504 after forwarding", "connection cut after forwarding"}

// faultPlan is how often the proxy breaks the bridge's requests.
type faultPlan struct {
	// SendFail is the share of PUT /send requests that fail, split evenly among badGateway,
	// gatewayTimeout and cutConnection.
	SendFail float64
	// Stall is the share of PUT /send requests held for StallFor before they go on.
	Stall    float64
	StallFor time.Duration
	// SyncFail is the share of GET /sync requests answered 502 at once.
	SyncFail float64
}

// defaultFaults is the plan of the faults scenario.
var defaultFaults = faultPlan{SendFail: 0.25, Stall: 0.01, StallFor: 3 * time.Second, SyncFail: 0.05}

// faultCounts are what the proxy did while faults were on.
type faultCounts struct {
	Sends      int64            `json:"sends"`
	SendFaults map[string]int64 `json:"send_faults"`
	Stalls     int64            `json:"stalls"`
	Syncs      int64            `json:"syncs"`
	SyncFaults int64            `json:"sync_502"`
}

// faultProxy is the homeserver as the faults scenario's bridge sees it: a reverse proxy on
// 127.0.0.1 in front of the real one that, while on, breaks some of the bridge's sends and
// syncs the way a network or a gateway does, drawn from a seeded random source (the draws are
// the same for the same seed; which request gets which draw depends on their order).
type faultProxy struct {
	upstream string
	plan     faultPlan
	srv      *httptest.Server
	hc       *http.Client
	on       atomic.Bool

	mu     sync.Mutex
	rnd    *rand.Rand
	counts [faultKinds]atomic.Int64
	stalls atomic.Int64
	sends  atomic.Int64
	syncs  atomic.Int64
	syncFs atomic.Int64
}

// newFaultProxy starts a proxy to upstream (a homeserver URL) with faults off.
func newFaultProxy(upstream string, plan faultPlan, seed uint64) *faultProxy {
	p := &faultProxy{
		upstream: strings.TrimRight(upstream, "/"),
		plan:     plan,
		hc:       &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}},
		rnd:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
	p.srv = httptest.NewServer(p)
	return p
}

func (p *faultProxy) close() { p.srv.Close() }

// setFaults turns the faults on or off and resets the counts.
func (p *faultProxy) setFaults(on bool) {
	for i := range p.counts {
		p.counts[i].Store(0)
	}
	p.stalls.Store(0)
	p.sends.Store(0)
	p.syncs.Store(0)
	p.syncFs.Store(0)
	p.on.Store(on)
}

// snapshot returns the counts since setFaults.
func (p *faultProxy) snapshot() faultCounts {
	c := faultCounts{Sends: p.sends.Load(), SendFaults: map[string]int64{}, Stalls: p.stalls.Load(), Syncs: p.syncs.Load(), SyncFaults: p.syncFs.Load()}
	for k := badGateway; k < faultKinds; k++ {
		c.SendFaults[faultNames[k]] = p.counts[k].Load()
	}
	return c
}

// isSend tells a PUT /rooms/{room}/send/{type}/{txn}, and isSync a GET /sync.
func isSend(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/rooms/") && strings.Contains(r.URL.Path, "/send/")
}

func isSync(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/sync")
}

// decide draws what to do with r, and whether to stall it first.
func (p *faultProxy) decide(r *http.Request) (fault, bool) {
	switch {
	case isSend(r):
		p.sends.Add(1)
	case isSync(r):
		p.syncs.Add(1)
	}
	if !p.on.Load() {
		return passThrough, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case isSend(r):
		stall := p.rnd.Float64() < p.plan.Stall
		u := p.rnd.Float64()
		f := passThrough
		if u < p.plan.SendFail {
			f = badGateway + fault(u/p.plan.SendFail*3)
		}
		return f, stall
	case isSync(r):
		if p.rnd.Float64() < p.plan.SyncFail {
			return badGateway, false
		}
	}
	return passThrough, false
}

// ServeHTTP forwards r to the homeserver, or breaks it as decide says.
func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f, stall := p.decide(r)
	if stall {
		p.stalls.Add(1)
		select {
		case <-time.After(p.plan.StallFor):
		case <-r.Context().Done():
			return
		}
	}
	if f != passThrough {
		if isSync(r) {
			p.syncFs.Add(1)
		} else {
			p.counts[f].Add(1)
		}
	}
	if f == badGateway {
		http.Error(w, "502 Bad Gateway (fault proxy)", http.StatusBadGateway)
		return
	}
	resp, body, err := p.forward(r)
	switch {
	case err != nil:
		http.Error(w, "502 Bad Gateway: "+err.Error(), http.StatusBadGateway)
	case f == gatewayTimeout:
		http.Error(w, "504 Gateway Timeout (fault proxy)", http.StatusGatewayTimeout)
	case f == cutConnection:
		cut(w)
	default:
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
	}
}

// forward sends r to the homeserver and reads its whole answer. A client that goes away
// cancels it, as a gateway does.
func (p *faultProxy) forward(r *http.Request) (*http.Response, []byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to read the request: %w", err)
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, p.upstream+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return nil, nil, fmt.Errorf("failed to build the request: %w", err)
	}
	out.Header = r.Header.Clone()
	out.Header.Del("Connection")
	resp, err := p.hc.Do(out)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to forward: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to read the answer: %w", err)
	}
	resp.Header.Del("Content-Length")
	return resp, data, nil
}

// cut closes the client's connection without an answer.
func cut(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}
