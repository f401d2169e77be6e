package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// standIn is the homeserver stand-in of the ceiling scenarios: an in-process HTTP server that
// answers the few endpoints the bridge needs at once, so that what is measured is the bridge's
// own cost. It is not a homeserver: no persistence, fixed rooms; it accepts every send. With
// e2ee set its rooms are encrypted and it answers the key endpoints (standin_e2ee.go).
type standIn struct {
	srv    *httptest.Server
	userID string
	rooms  []string
	peer   string
	e2ee   *standInE2EE

	sends          atomic.Int64
	encryptedSends atomic.Int64 // of sends, those of m.room.encrypted
	syncs          atomic.Int64
	mu             sync.Mutex
	unknown        map[string]int
	accountData    map[string]json.RawMessage
	bursts         chan *burst
	seq            atomic.Int64
}

// burst is a batch of inbound events that one sync response carries; written is set to the
// moment the response was written to the bridge's connection.
type burst struct {
	body    []byte
	ids     []string
	written chan time.Time
}

const (
	standInServer = "standin.localhost"
	standInBot    = "@bot:" + standInServer
	standInPeer   = "@alice:" + standInServer
)

// newStandIn starts a stand-in with rooms plaintext rooms.
func newStandIn(rooms int) *standIn { return startStandIn(rooms, nil) }

// startStandIn starts a stand-in with rooms rooms, encrypted and with the key endpoints of enc
// unless enc is nil.
func startStandIn(rooms int, enc *standInE2EE) *standIn {
	s := &standIn{userID: standInBot, peer: standInPeer, e2ee: enc, unknown: map[string]int{}, accountData: map[string]json.RawMessage{}, bursts: make(chan *burst)}
	for i := range rooms {
		s.rooms = append(s.rooms, fmt.Sprintf("!standin%03d:%s", i, standInServer))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/client/versions", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, map[string]any{"versions": []string{"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11"}})
	})
	mux.HandleFunc("POST /_matrix/client/v3/login", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, map[string]any{"user_id": s.userID, "access_token": "standin-token", "device_id": "STANDIN"})
	})
	mux.HandleFunc("GET /_matrix/client/v3/account/whoami", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, map[string]any{"user_id": s.userID, "device_id": "STANDIN"})
	})
	mux.HandleFunc("POST /_matrix/client/v3/user/{user}/filter", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, map[string]any{"filter_id": "1"})
	})
	mux.HandleFunc("GET /_matrix/client/v3/user/{user}/account_data/{type}", s.getAccountData)
	mux.HandleFunc("PUT /_matrix/client/v3/user/{user}/account_data/{type}", s.putAccountData)
	mux.HandleFunc("PUT /_matrix/client/v3/rooms/{room}/send/{type}/{txn}", s.send)
	mux.HandleFunc("PUT /_matrix/client/v3/rooms/{room}/redact/{event}/{txn}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"event_id": "$" + r.PathValue("txn")})
	})
	mux.HandleFunc("GET /_matrix/client/v3/sync", s.sync)
	// A bridge that cannot encrypt asks once per room whether it is encrypted.
	mux.HandleFunc("GET /_matrix/client/v3/rooms/{room}/state/m.room.encryption/", func(w http.ResponseWriter, _ *http.Request) {
		if enc == nil {
			writeJSON(w, 404, map[string]any{"errcode": "M_NOT_FOUND", "error": "Event not found."})
			return
		}
		writeJSON(w, 200, megolmRoom)
	})
	if enc != nil {
		enc.register(mux, s)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.unknown[r.Method+" "+r.URL.Path]++
		s.mu.Unlock()
		writeJSON(w, 404, map[string]any{"errcode": "M_UNRECOGNIZED", "error": "not in the stand-in"})
	})
	s.srv = httptest.NewServer(mux)
	return s
}

func (s *standIn) close() { s.srv.Close() }

// send accepts an event at once; its ID is made from the transaction ID.
func (s *standIn) send(w http.ResponseWriter, r *http.Request) {
	s.sends.Add(1)
	if r.PathValue("type") == "m.room.encrypted" {
		s.encryptedSends.Add(1)
		if s.e2ee != nil {
			s.e2ee.keepFirstEvent(r)
		}
	}
	writeJSON(w, 200, map[string]any{"event_id": "$" + r.PathValue("txn")})
}

// getAccountData answers what putAccountData kept (the E2EE setup reads its secret storage back).
func (s *standIn) getAccountData(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	data, ok := s.accountData[r.PathValue("type")]
	s.mu.Unlock()
	if !ok {
		writeJSON(w, 404, map[string]any{"errcode": "M_NOT_FOUND", "error": "Account data not found"})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(data)
}

func (s *standIn) putAccountData(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(r.Body)
	if err != nil || !json.Valid(data) {
		writeJSON(w, 400, map[string]any{"errcode": "M_NOT_JSON", "error": "not JSON"})
		return
	}
	s.mu.Lock()
	s.accountData[r.PathValue("type")] = data
	s.mu.Unlock()
	writeJSON(w, 200, map[string]any{})
}

func (s *standIn) unknownRequests() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, v := range s.unknown {
		out[k] = v
	}
	return out
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func stateEvent(typ, stateKey, sender string, content map[string]any, n int) map[string]any {
	return map[string]any{"type": typ, "state_key": stateKey, "sender": sender, "content": content,
		"event_id": fmt.Sprintf("$state%d", n), "origin_server_ts": time.Now().UnixMilli()}
}

// sync answers the initial sync with the rooms at once; later ones wait for a burst or their
// timeout, like a long poll.
func (s *standIn) sync(w http.ResponseWriter, r *http.Request) {
	n := s.syncs.Add(1)
	if r.URL.Query().Get("since") == "" {
		join := map[string]any{}
		for i, room := range s.rooms {
			join[room] = map[string]any{
				"state":    map[string]any{"events": s.roomState(i)},
				"timeline": map[string]any{"events": []any{}, "limited": false},
			}
		}
		writeJSON(w, 200, s.syncResponse(n, map[string]any{"join": join}))
		return
	}
	timeout, _ := strconv.Atoi(r.URL.Query().Get("timeout"))
	select {
	case b := <-s.bursts:
		body := strings.Replace(string(b.body), "NEXT_BATCH", "s"+strconv.FormatInt(n, 10), 1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		b.written <- time.Now()
	case <-time.After(time.Duration(timeout) * time.Millisecond):
		writeJSON(w, 200, s.syncResponse(n, nil))
	case <-r.Context().Done():
	}
}

// roomState is the state of the i-th room in the initial sync: the peer's room with the bot
// joined, encrypted on an E2EE stand-in.
func (s *standIn) roomState(i int) []any {
	events := []any{
		stateEvent("m.room.create", "", s.peer, map[string]any{"creator": s.peer, "room_version": "10"}, i*10),
		stateEvent("m.room.member", s.peer, s.peer, map[string]any{"membership": "join", "displayname": "Alice"}, i*10+1),
		stateEvent("m.room.member", s.userID, s.userID, map[string]any{"membership": "join"}, i*10+2),
		stateEvent("m.room.name", "", s.peer, map[string]any{"name": fmt.Sprintf("Stand-in room %d", i)}, i*10+3),
	}
	if s.e2ee != nil {
		events = append(events, stateEvent("m.room.encryption", "", s.peer, megolmRoom, i*10+4))
	}
	return events
}

// syncResponse is a sync response with the n-th batch token and rooms (nil: none); an E2EE
// stand-in adds the bot's one-time key count, as a homeserver does, so that mautrix does not
// try to upload more keys on every sync.
func (s *standIn) syncResponse(n int64, rooms map[string]any) map[string]any {
	resp := map[string]any{"next_batch": "s" + strconv.FormatInt(n, 10)}
	if rooms != nil {
		resp["rooms"] = rooms
	}
	if s.e2ee != nil {
		resp["device_one_time_keys_count"] = s.e2ee.otkCount()
	}
	return resp
}

// newBurst builds a sync response with perRoom new messages from the peer in each of rooms
// rooms.
func (s *standIn) newBurst(rooms, perRoom int) *burst {
	b := &burst{written: make(chan time.Time, 1)}
	join := map[string]any{}
	now := time.Now().UnixMilli()
	for i := range min(rooms, len(s.rooms)) {
		events := make([]any, 0, perRoom)
		for range perRoom {
			id := fmt.Sprintf("$in%d", s.seq.Add(1))
			b.ids = append(b.ids, id)
			events = append(events, map[string]any{
				"type": "m.room.message", "event_id": id, "sender": s.peer, "origin_server_ts": now,
				"content":  map[string]any{"msgtype": "m.text", "body": "Inbound message " + id},
				"unsigned": map[string]any{"age": 1},
			})
		}
		join[s.rooms[i]] = map[string]any{"timeline": map[string]any{"events": events, "limited": false, "prev_batch": "p"}}
	}
	b.body, _ = json.Marshal(map[string]any{"next_batch": "NEXT_BATCH", "rooms": map[string]any{"join": join}})
	return b
}
