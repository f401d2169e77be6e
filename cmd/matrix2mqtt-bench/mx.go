package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// mx is a minimal Matrix client-server API client over net/http: the "direct client" of the
// comparisons, and the helper that creates rooms and watches /sync. It adds as little as a Go
// client can on top of the HTTP requests themselves.
type mx struct {
	hs       string
	userID   string
	token    string
	deviceID string
	http     *http.Client
}

func newHTTPClient(conns int) *http.Client {
	return &http.Client{
		Timeout:   2 * time.Minute,
		Transport: &http.Transport{MaxIdleConns: conns + 8, MaxIdleConnsPerHost: conns + 8, IdleConnTimeout: time.Minute},
	}
}

type mxError struct {
	Status  int
	ErrCode string `json:"errcode"`
	Message string `json:"error"`
}

func (e *mxError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.ErrCode, e.Message)
}

func (c *mx) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.hs+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		e := &mxError{Status: resp.StatusCode}
		_ = json.Unmarshal(data, e)
		if e.Message == "" {
			e.Message = string(data)
		}
		return fmt.Errorf("%s %s: %w", method, path, e)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// login logs in with a password as a new device and returns a client for it.
func login(ctx context.Context, hs, userID, password, device string, hc *http.Client) (*mx, error) {
	c := &mx{hs: hs, http: hc}
	var resp struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	err := c.do(ctx, http.MethodPost, "/_matrix/client/v3/login", map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]string{"type": "m.id.user", "user": userID},
		"password":   password, "initial_device_display_name": device,
	}, &resp)
	if err != nil {
		return nil, err
	}
	c.userID, c.token, c.deviceID = resp.UserID, resp.AccessToken, resp.DeviceID
	return c, nil
}

func (c *mx) createRoom(ctx context.Context, name string, invite []string, encrypted bool) (string, error) {
	req := map[string]any{"preset": "private_chat", "name": name, "invite": invite}
	if encrypted {
		req["initial_state"] = []map[string]any{{
			"type": "m.room.encryption", "state_key": "",
			"content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"},
		}}
	}
	var resp struct {
		RoomID string `json:"room_id"`
	}
	err := c.do(ctx, http.MethodPost, "/_matrix/client/v3/createRoom", req, &resp)
	return resp.RoomID, err
}

func (c *mx) join(ctx context.Context, roomID string) error {
	return c.do(ctx, http.MethodPost, "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{}, nil)
}

func (c *mx) joinedMembers(ctx context.Context, roomID string) (map[string]any, error) {
	var resp struct {
		Joined map[string]any `json:"joined"`
	}
	err := c.do(ctx, http.MethodGet, "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", nil, &resp)
	return resp.Joined, err
}

func (c *mx) send(ctx context.Context, roomID, txnID string, content any) (string, error) {
	var resp struct {
		EventID string `json:"event_id"`
	}
	err := c.do(ctx, http.MethodPut, "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+url.PathEscape(txnID), content, &resp)
	return resp.EventID, err
}

// seenEvent is a timeline event as a watcher saw it in /sync.
type seenEvent struct {
	At     time.Time
	Type   string
	TS     int64
	Sender string
}

// watcher long-polls /sync for one device and records when each timeline event showed up.
type watcher struct {
	c    *mx
	mu   sync.Mutex
	seen map[string]seenEvent
	news chan struct{}
	stop context.CancelFunc
	done chan struct{}
	// ready is closed after the first (initial) sync.
	ready chan struct{}
}

const watchFilter = `{"presence":{"not_types":["*"]},"account_data":{"not_types":["*"]},` +
	`"room":{"timeline":{"limit":1000},"state":{"lazy_load_members":true},"ephemeral":{"not_types":["*"]},"account_data":{"not_types":["*"]}}}`

func startWatcher(c *mx) *watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{c: c, seen: map[string]seenEvent{}, news: make(chan struct{}, 1), stop: cancel, done: make(chan struct{}), ready: make(chan struct{})}
	go w.run(ctx)
	return w
}

func (w *watcher) run(ctx context.Context) {
	defer close(w.done)
	since := ""
	for ctx.Err() == nil {
		q := url.Values{"filter": {watchFilter}, "timeout": {"30000"}}
		if since != "" {
			q.Set("since", since)
		} else {
			q.Set("timeout", "0")
		}
		var resp struct {
			NextBatch string `json:"next_batch"`
			Rooms     struct {
				Join map[string]struct {
					Timeline struct {
						Events []struct {
							ID     string `json:"event_id"`
							Type   string `json:"type"`
							TS     int64  `json:"origin_server_ts"`
							Sender string `json:"sender"`
						} `json:"events"`
					} `json:"timeline"`
				} `json:"join"`
			} `json:"rooms"`
		}
		err := w.c.do(ctx, http.MethodGet, "/_matrix/client/v3/sync?"+q.Encode(), nil, &resp)
		now := time.Now()
		if err != nil {
			if ctx.Err() == nil {
				time.Sleep(200 * time.Millisecond)
			}
			continue
		}
		w.mu.Lock()
		for _, room := range resp.Rooms.Join {
			for _, ev := range room.Timeline.Events {
				if _, ok := w.seen[ev.ID]; !ok {
					w.seen[ev.ID] = seenEvent{At: now, Type: ev.Type, TS: ev.TS, Sender: ev.Sender}
				}
			}
		}
		w.mu.Unlock()
		select {
		case w.news <- struct{}{}:
		default:
		}
		if since == "" {
			close(w.ready)
		}
		since = resp.NextBatch
	}
}

func (w *watcher) get(eventID string) (seenEvent, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ev, ok := w.seen[eventID]
	return ev, ok
}

// waitAll waits until every event in ids was seen, or limit passes; it returns how many were.
func (w *watcher) waitAll(ids []string, limit time.Duration) int {
	deadline := time.Now().Add(limit)
	for {
		n := 0
		w.mu.Lock()
		for _, id := range ids {
			if _, ok := w.seen[id]; ok {
				n++
			}
		}
		w.mu.Unlock()
		if n == len(ids) || time.Now().After(deadline) {
			return n
		}
		select {
		case <-w.news:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (w *watcher) close() {
	w.stop()
	<-w.done
}

// anyOfType returns the ID of an event of type typ that the watcher saw, or "".
func (w *watcher) anyOfType(typ string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, ev := range w.seen {
		if ev.Type == typ {
			return id
		}
	}
	return ""
}
