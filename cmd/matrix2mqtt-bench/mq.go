package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// response is a bridge response as the benchmark's MQTT client received it.
type response struct {
	At      time.Time
	Status  string
	EventID string
	Error   string
}

// stamped is a bridge topic message with the time it arrived.
type stamped struct {
	At       time.Time
	Payload  []byte
	Retained bool
}

// monitor is the benchmark's MQTT client for one bridge: it publishes requests and records
// responses, bridge state and inbound events under the bridge's base topic.
type monitor struct {
	base string
	cli  paho.Client

	mu      sync.Mutex
	waiters map[string]chan response
	inbound map[string]time.Time // event_id → when its message arrived
	topics  map[string][]stamped // bridge/state, bridge/info, bridge/rooms
	news    chan struct{}
	strays  atomic.Int64 // responses nobody waited for
}

var clientSeq atomic.Int64

func newMonitor(mqttURL, base string) (*monitor, error) {
	m := &monitor{base: base, waiters: map[string]chan response{}, inbound: map[string]time.Time{}, topics: map[string][]stamped{}, news: make(chan struct{}, 1)}
	subscribed := make(chan error, 1)
	opts := paho.NewClientOptions().AddBroker(mqttURL).
		SetClientID(fmt.Sprintf("bench-%d-%d", time.Now().UnixNano()%1e6, clientSeq.Add(1))).
		SetCleanSession(true).SetAutoReconnect(true).SetOrderMatters(true).
		SetOnConnectHandler(func(c paho.Client) {
			tok := c.Subscribe(base+"/#", 1, m.handle)
			go func() {
				tok.Wait()
				select {
				case subscribed <- tok.Error():
				default:
				}
			}()
		})
	m.cli = paho.NewClient(opts)
	if tok := m.cli.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("benchmark MQTT client failed to connect to %s: %v", mqttURL, tok.Error())
	}
	select {
	case err := <-subscribed:
		if err != nil {
			return nil, err
		}
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("benchmark MQTT client failed to subscribe")
	}
	return m, nil
}

func (m *monitor) close() { m.cli.Disconnect(100) }

func (m *monitor) notify() {
	select {
	case m.news <- struct{}{}:
	default:
	}
}

func (m *monitor) handle(_ paho.Client, msg paho.Message) {
	now := time.Now()
	rest, ok := strings.CutPrefix(msg.Topic(), m.base+"/")
	if !ok {
		return
	}
	switch {
	case strings.HasPrefix(rest, "bridge/response/"):
		var r struct {
			ID     string `json:"id"`
			Status string `json:"status"`
			Data   struct {
				EventID string `json:"event_id"`
			} `json:"data"`
			Error *struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(msg.Payload(), &r) != nil {
			return
		}
		resp := response{At: now, Status: r.Status, EventID: r.Data.EventID}
		if r.Error != nil {
			resp.Error = r.Error.Code + ": " + r.Error.Message
		}
		m.mu.Lock()
		ch := m.waiters[r.ID]
		delete(m.waiters, r.ID)
		m.mu.Unlock()
		if ch == nil {
			m.strays.Add(1)
			return
		}
		ch <- resp
	case strings.HasPrefix(rest, "room/") && strings.HasSuffix(rest, "/message"):
		var ev struct {
			EventID string `json:"event_id"`
		}
		if json.Unmarshal(msg.Payload(), &ev) != nil {
			return
		}
		m.mu.Lock()
		if _, dup := m.inbound[ev.EventID]; !dup {
			m.inbound[ev.EventID] = now
		}
		m.mu.Unlock()
		m.notify()
	case strings.HasPrefix(rest, "bridge/"):
		m.mu.Lock()
		m.topics[rest] = append(m.topics[rest], stamped{At: now, Payload: msg.Payload(), Retained: msg.Retained()})
		m.mu.Unlock()
		m.notify()
	}
}

// request publishes a request (QoS 1) whose payload carries reqID and waits for its response.
// It returns when the publish started and the response.
func (m *monitor) request(ctx context.Context, topic, reqID string, payload []byte) (time.Time, response, error) {
	ch := make(chan response, 1)
	m.mu.Lock()
	m.waiters[reqID] = ch
	m.mu.Unlock()
	t0 := time.Now()
	tok := m.cli.Publish(topic, 1, false, payload)
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return t0, response{}, err
		}
	case <-ctx.Done():
		return t0, response{}, ctx.Err()
	}
	select {
	case r := <-ch:
		return t0, r, nil
	case <-ctx.Done():
		m.mu.Lock()
		delete(m.waiters, reqID)
		m.mu.Unlock()
		return t0, response{}, fmt.Errorf("no response to %s: %w", reqID, ctx.Err())
	}
}

// waitTopic waits for a live (not retained) message on a bridge topic that arrived after since
// and matches; it returns its arrival time.
func (m *monitor) waitTopic(topic string, since time.Time, limit time.Duration, match func([]byte) bool) (time.Time, error) {
	deadline := time.After(limit)
	for {
		m.mu.Lock()
		for _, s := range m.topics[topic] {
			if !s.Retained && !s.At.Before(since) && (match == nil || match(s.Payload)) {
				m.mu.Unlock()
				return s.At, nil
			}
		}
		m.mu.Unlock()
		select {
		case <-m.news:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			return time.Time{}, fmt.Errorf("no %s/%s within %s", m.base, topic, limit)
		}
	}
}

// latest returns the newest message on a bridge topic.
func (m *monitor) latest(topic string) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.topics[topic]; len(s) > 0 {
		return s[len(s)-1].Payload
	}
	return nil
}

func (m *monitor) inboundAt(eventID string) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.inbound[eventID]
	return t, ok
}

// waitInbound waits until all ids arrived as inbound messages or limit passes; it returns how
// many did.
func (m *monitor) waitInbound(ids []string, limit time.Duration) int {
	deadline := time.Now().Add(limit)
	for {
		n := 0
		m.mu.Lock()
		for _, id := range ids {
			if _, ok := m.inbound[id]; ok {
				n++
			}
		}
		m.mu.Unlock()
		if n == len(ids) || time.Now().After(deadline) {
			return n
		}
		select {
		case <-m.news:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// online is the bridge's info payload, as far as the benchmark reads it.
type online struct {
	UserID string `json:"user_id"`
	E2EE   struct {
		Enabled bool `json:"enabled"`
	} `json:"e2ee"`
}

// waitOnline waits until a bridge started at since published `online` and its info, and
// returns how long after since each came, and the info.
func (m *monitor) waitOnline(since time.Time, limit time.Duration) (state, info time.Duration, inf online, err error) {
	st, err := m.waitTopic("bridge/state", since, limit, func(p []byte) bool { return string(p) == "online" })
	if err != nil {
		return 0, 0, inf, err
	}
	it, err := m.waitTopic("bridge/info", since, limit, nil)
	if err != nil {
		return 0, 0, inf, err
	}
	m.mu.Lock()
	for _, s := range m.topics["bridge/info"] {
		if !s.Retained && !s.At.Before(since) {
			_ = json.Unmarshal(s.Payload, &inf)
			break
		}
	}
	m.mu.Unlock()
	return st.Sub(since), it.Sub(since), inf, nil
}

// roomCount returns how many rooms the newest live bridge/rooms message since lists.
func (m *monitor) roomCount(since time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.topics["bridge/rooms"]
	for i := len(s) - 1; i >= 0; i-- {
		if s[i].At.Before(since) {
			break
		}
		var rooms []json.RawMessage
		if json.Unmarshal(s[i].Payload, &rooms) == nil {
			return len(rooms)
		}
	}
	return 0
}

// expect registers a waiter for the response to reqID, for a request published without
// waiting for it (request publishes and waits).
func (m *monitor) expect(reqID string) <-chan response {
	ch := make(chan response, 1)
	m.mu.Lock()
	m.waiters[reqID] = ch
	m.mu.Unlock()
	return ch
}
