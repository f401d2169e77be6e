package integration

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/internal/testenv"
)

// publisher is an MQTT client that publishes requests at QoS 1, as an automation would.
type publisher struct {
	t   *testing.T
	cli paho.Client
}

func newPublisher(t *testing.T, srv *testenv.Env) *publisher {
	t.Helper()
	return newPublisherAt(t, srv.MQTTURL)
}

// newPublisherAt is newPublisher on the broker at url.
func newPublisherAt(t *testing.T, url string) *publisher {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("pub-%d", time.Now().UnixNano())).
		SetCleanSession(true).SetAutoReconnect(false)
	cli := paho.NewClient(opts)
	if tok := cli.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher failed to connect: %v", tok.Error())
	}
	return &publisher{t: t, cli: cli}
}

func (p *publisher) publish(topic, payload string) {
	p.t.Helper()
	if tok := p.cli.Publish(topic, 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		p.t.Fatalf("failed to publish: %v", tok.Error())
	}
}

func (p *publisher) close() { p.cli.Disconnect(100) }

// burstBody is the text of message seq to room r in a burst tagged tag.
func burstBody(tag string, r, seq int) string { return fmt.Sprintf("%s %d %06d", tag, r, seq) }

// burst publishes n send requests, round-robin over rooms; before message i it calls hook(i),
// which may return a new publisher (after a broker restart, say).
func burst(h *harness, pub *publisher, rooms []id.RoomID, n int, tag string, hook func(i int) *publisher) {
	h.t.Helper()
	for i := range n {
		if hook != nil {
			if p := hook(i); p != nil {
				pub = p
			}
		}
		r := i % len(rooms)
		pub.publish(h.base+"/bridge/request/send",
			fmt.Sprintf(`{"id":"%s-%d","to":"%s","text":"%s"}`, tag, i, rooms[r], burstBody(tag, r, i)))
	}
}

// sharedRooms creates n rooms of alice's with the bot in them.
func (h *harness) sharedRooms(n int) []id.RoomID {
	rooms := make([]id.RoomID, n)
	for i := range rooms {
		rooms[i] = h.sharedRoom(nil)
	}
	return rooms
}

// delivered reads what the bot sent to each room in Matrix (as alice sees it) and returns, per
// room, the sequence numbers of the burst's messages in timeline order.
func delivered(t *testing.T, alice *user, rooms []id.RoomID, tag string) [][]int {
	t.Helper()
	out := make([][]int, len(rooms))
	for r, room := range rooms {
		var seqs []int
		from := ""
		for {
			resp, err := alice.cli.Messages(context.Background(), room, from, "", mautrix.DirectionBackward, nil, 100)
			if err != nil {
				t.Fatalf("failed to read messages: %v", err)
			}
			for _, evt := range resp.Chunk {
				if evt.Type != event.EventMessage {
					continue
				}
				var c event.MessageEventContent
				_ = evt.Content.ParseRaw(evt.Type)
				if mc, ok := evt.Content.Parsed.(*event.MessageEventContent); ok {
					c = *mc
				}
				fields := strings.Fields(c.Body)
				if len(fields) == 3 && fields[0] == tag {
					seq, _ := strconv.Atoi(fields[2])
					seqs = append(seqs, seq)
				}
			}
			if resp.End == "" || len(resp.Chunk) == 0 {
				break
			}
			from = resp.End
		}
		for i, j := 0, len(seqs)-1; i < j; i, j = i+1, j-1 { // oldest first
			seqs[i], seqs[j] = seqs[j], seqs[i]
		}
		out[r] = seqs
	}
	return out
}

// waitDelivered polls Matrix until all n messages of the burst are there, then checks that each
// is there exactly once and in publish order per room. It returns when the last one arrived.
func waitDelivered(t *testing.T, alice *user, rooms []id.RoomID, tag string, n int, limit time.Duration) time.Time {
	t.Helper()
	return waitDeliveredOnce(t, alice, rooms, tag, n, limit, true)
}

// waitDeliveredOnce is waitDelivered; ordered says whether the order per room is checked too.
func waitDeliveredOnce(t *testing.T, alice *user, rooms []id.RoomID, tag string, n int, limit time.Duration, ordered bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		got := delivered(t, alice, rooms, tag)
		total := 0
		for _, seqs := range got {
			total += len(seqs)
		}
		if total >= n {
			checkExactlyOnce(t, got, len(rooms), n, ordered)
			return time.Now()
		}
		if time.Now().After(deadline) {
			checkExactlyOnce(t, got, len(rooms), n, ordered)
			t.Fatalf("only %d of %d messages delivered within %s", total, n, limit)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func checkExactlyOnceInOrder(t *testing.T, got [][]int, rooms, n int) {
	t.Helper()
	checkExactlyOnce(t, got, rooms, n, true)
}

// checkExactlyOnce checks that each of the n messages is in its room once; with ordered, also
// in publish order. Without, it reports how many are out of order.
func checkExactlyOnce(t *testing.T, got [][]int, rooms, n int, ordered bool) {
	t.Helper()
	for r, seqs := range got {
		if !ordered {
			if late := outOfOrder(seqs); late > 0 {
				report(t, "room %d: %d messages out of publish order (not checked with this broker)", r, late)
			}
		} else if !sort.IntsAreSorted(seqs) {
			t.Errorf("room %d: messages out of publish order: %v", r, seqs)
		}
		for _, s := range seqs {
			if s%rooms != r {
				t.Errorf("message %d in room %d", s, r)
			}
		}
	}
	if missing, doubled := onceEach(got, n); len(missing) > 0 || len(doubled) > 0 {
		t.Errorf("missing %d %v, doubled %d %v", len(missing), head(missing), len(doubled), head(doubled))
	}
}

// onceEach returns the messages of 0..n-1 that are in no room, and those that are there more
// than once.
func onceEach(got [][]int, n int) (missing, doubled []int) {
	seen := map[int]int{}
	for _, seqs := range got {
		for _, s := range seqs {
			seen[s]++
		}
	}
	for i := range n {
		switch seen[i] {
		case 0:
			missing = append(missing, i)
		case 1:
		default:
			doubled = append(doubled, i)
		}
	}
	return missing, doubled
}

// checkStillOnce reads the rooms from Matrix again after settle, once every request was
// answered: a copy sent after the responses (a late duplicate) shows up only then.
func checkStillOnce(t *testing.T, alice *user, rooms []id.RoomID, tag string, n int, settle time.Duration) {
	t.Helper()
	time.Sleep(settle)
	if missing, doubled := onceEach(delivered(t, alice, rooms, tag), n); len(missing) > 0 || len(doubled) > 0 {
		t.Errorf("%s after the last response: missing %d %v, doubled %d %v", settle, len(missing), head(missing), len(doubled), head(doubled))
	}
}

// outOfOrder counts the messages that come after a later-published one.
func outOfOrder(seqs []int) int {
	n, highest := 0, -1
	for _, s := range seqs {
		if s < highest {
			n++
		}
		highest = max(highest, s)
	}
	return n
}

func head(s []int) []int {
	if len(s) > 20 {
		return s[:20]
	}
	return s
}

// checkResponses checks that every request of the burst was answered ok, and that answers
// repeated after a crash carry the same event ID.
func checkResponses(t *testing.T, h *harness, tag string, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		events := map[string]map[string]bool{}
		for _, m := range h.rec.all(h.base + "/bridge/response/send") {
			resp := m.json(t)
			reqID, _ := resp["id"].(string)
			if !strings.HasPrefix(reqID, tag+"-") {
				continue
			}
			if resp["status"] != "ok" {
				t.Fatalf("request %s failed: %v", reqID, resp)
			}
			data := resp["data"].(map[string]any)
			if events[reqID] == nil {
				events[reqID] = map[string]bool{}
			}
			events[reqID][data["event_id"].(string)] = true
		}
		if len(events) == n || time.Now().After(deadline) {
			for reqID, ids := range events {
				if len(ids) != 1 {
					t.Errorf("request %s answered with different event IDs: %v", reqID, ids)
				}
			}
			if len(events) != n {
				t.Fatalf("%d of %d requests answered", len(events), n)
			}
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestCrashDuringBurst kills the bridge with SIGKILL in the middle of 500 QoS 1 requests over 5
// rooms and starts it again: every message is in Matrix once, in order per room, and still once
// when the rooms are read again a few seconds after the last response.
func TestCrashDuringBurst(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { crashDuringBurst(t, nil) })
	t.Run("postgres", func(t *testing.T) {
		pg, err := testenv.StartPostgres(context.Background(), t.TempDir())
		if err != nil {
			t.Fatalf("failed to start PostgreSQL: %v", err)
		}
		defer pg.Close()
		url, err := pg.CreateDatabase(context.Background(), "crash")
		if err != nil {
			t.Fatal(err)
		}
		crashDuringBurst(t, map[string]string{"DATABASE_URL": url})
	})
	// Aedes hands messages published while the bridge reconnects over again as new ones, and
	// lets new ones overtake its offline queue: the request ids keep them exactly once; the
	// order across the restart is not kept (docs/delivery.md, "Brokers").
	t.Run("aedes", func(t *testing.T) {
		broker, err := testenv.StartAedes(context.Background(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer broker.Close()
		crashDuringBurst(t, map[string]string{"MQTT_URL": broker.MQTTURL})
	})
}

func crashDuringBurst(t *testing.T, extra map[string]string) {
	h := newHarness(t, extra)
	h.stop()
	h.startProcess()
	rooms := h.sharedRooms(5)
	const n = 500
	pub := newPublisherAt(t, h.env["MQTT_URL"])
	defer pub.close()
	started := time.Now()
	var killedAt time.Time
	burst(h, pub, rooms, n, "crash", func(i int) *publisher {
		switch i {
		case 150:
			h.kill()
			killedAt = time.Now()
		case 300:
			time.Sleep(time.Second)
			h.startProcess()
			report(t, "bridge killed (SIGKILL) after 150 requests and restarted after 300; it was down %s", time.Since(killedAt).Round(time.Millisecond))
		}
		return nil
	})
	ordered := extra["MQTT_URL"] == ""
	done := waitDeliveredOnce(t, h.alice, rooms, "crash", n, 2*time.Minute, ordered)
	checkResponses(t, h, "crash", n)
	checkStillOnce(t, h.alice, rooms, "crash", n, 5*time.Second)
	report(t, "%d messages over %d rooms, killed once: all delivered exactly once (in order: %v) in %s (%.0f msg/s overall)",
		n, len(rooms), ordered, done.Sub(started).Round(time.Millisecond), float64(n)/done.Sub(started).Seconds())
}

// TestHomeserverOutageDuringBurst stops Dendrite for 30 s in the middle of a burst: the first 50
// requests are delivered, the other 150 are published while it is down. It stops Dendrite when
// no request is in flight: Dendrite stopped during a request answers 500 and stores the event
// about 5 minutes after its restart, when it no longer knows the transaction ID, a duplicate
// that no client can rule out without waiting that long (docs/delivery.md, "The cases left").
func TestHomeserverOutageDuringBurst(t *testing.T) {
	h := newHarness(t, nil)
	h.stop()
	h.startProcess()
	rooms := h.sharedRooms(5)
	const n = 200
	pub := newPublisher(t, env)
	defer pub.close()
	var stoppedAt time.Time
	burst(h, pub, rooms, n, "outage", func(i int) *publisher {
		if i == 50 {
			checkResponses(t, h, "outage", 50)
			if err := env.StopDendrite(); err != nil {
				t.Fatal(err)
			}
			stoppedAt = time.Now()
		}
		return nil
	})
	time.Sleep(time.Until(stoppedAt.Add(30 * time.Second)))
	stats := h.ok(h.request("outbox_stats", map[string]any{}))
	report(t, "outbox during the outage: %v pending, oldest %.1fs", stats["outbox_pending"], stats["oldest_pending_age_s"])
	if err := env.StartDendrite(context.Background()); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	h.ok(h.request("outbox_flush", map[string]any{}))
	done := waitDelivered(t, h.alice, rooms, "outage", n, 2*time.Minute)
	checkResponses(t, h, "outage", n)
	report(t, "homeserver down 30s with %v requests queued: backlog drained %s after it came back", stats["outbox_pending"], done.Sub(restarted).Round(time.Millisecond))
}

// TestBrokerRestartDuringBurst restarts a persistent Mosquitto in the middle of a burst: the
// QoS 1 messages it queued for the bridge survive, and the bridge reconnects and resubscribes.
func TestBrokerRestartDuringBurst(t *testing.T) {
	srv, err := testenv.Start(context.Background(), testenv.Options{MosquittoPersistence: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	h := newHarnessOn(t, srv, nil)
	h.stop()
	h.startProcess()
	rooms := h.sharedRooms(5)
	const n = 300
	pub := newPublisher(t, srv)
	started := time.Now()
	burst(h, pub, rooms, n, "broker", func(i int) *publisher {
		if i != 150 {
			return nil
		}
		pub.close()
		if err := srv.RestartMosquitto(context.Background()); err != nil {
			t.Fatal(err)
		}
		pub = newPublisher(t, srv)
		return pub
	})
	defer pub.close()
	done := waitDelivered(t, h.alice, rooms, "broker", n, 2*time.Minute)
	report(t, "%d messages with a broker restart in the middle: all delivered exactly once and in order in %s", n, done.Sub(started).Round(time.Millisecond))
}

// TestRateLimitedHomeserver runs Dendrite with its rate limits on: the bridge waits as told
// (M_LIMIT_EXCEEDED retry_after_ms) and every request succeeds. Dendrite limits typing and
// receipts, not sends, so the burst mixes both.
func TestRateLimitedHomeserver(t *testing.T) {
	srv, err := testenv.Start(context.Background(), testenv.Options{DendriteRateLimit: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	h := newHarnessOn(t, srv, nil)
	room := h.sharedRoom(nil)
	pub := newPublisher(t, srv)
	defer pub.close()
	const typing = 30
	started := time.Now()
	for i := range typing {
		pub.publish(h.base+"/bridge/request/typing", fmt.Sprintf(`{"id":"typing-%d","to":"%s","typing":%t}`, i, room, i%2 == 0))
	}
	burst(h, pub, []id.RoomID{room}, 100, "limited", nil)
	for i := range typing {
		h.ok(h.response("typing", fmt.Sprintf("typing-%d", i)))
	}
	typingDone := time.Since(started)
	waitDelivered(t, h.alice, []id.RoomID{room}, "limited", 100, time.Minute)
	// 5 requests per 500 ms per device: 30 typing requests cannot finish in less than ~2.5 s
	// unless the limit was ignored, and none failed, so the bridge waited instead.
	if typingDone < 2*time.Second {
		t.Errorf("30 rate-limited requests done in %s: the limit did not apply", typingDone)
	}
	report(t, "30 rate-limited typing requests all succeeded in %s (limit 5 per 500 ms); 100 sends delivered", typingDone.Round(time.Millisecond))
}

// TestExpiryAndAutoRedactionAcrossRestart: a scheduled redaction survives a restart of the
// bridge, and a request that waited past its expire_s while the bridge was down is answered
// expired and never delivered.
func TestExpiryAndAutoRedactionAcrossRestart(t *testing.T) {
	h := newHarness(t, nil)
	room := h.sharedRoom(nil)
	data := h.ok(h.request("send", map[string]any{"to": room.String(), "text": "self-destructs", "redact_after_s": 4}))
	evtID := id.EventID(data["event_id"].(string))
	h.stop()
	if evt := h.alice.event(t, room, evtID); evt.Unsigned.RedactedBecause != nil {
		t.Fatal("redacted too early")
	}
	time.Sleep(4 * time.Second)
	h.start()
	eventually(t, 20*time.Second, func() error {
		evt, err := h.alice.cli.GetEvent(context.Background(), room, evtID)
		if err != nil {
			return err
		}
		if evt.Unsigned.RedactedBecause == nil {
			return fmt.Errorf("not redacted yet")
		}
		return nil
	})

	if err := env.StopDendrite(); err != nil {
		t.Fatal(err)
	}
	h.rec.publish(h.base+"/bridge/request/send", 1, `{"id":"too-late","to":"`+room.String()+`","text":"stale alarm","expire_s":3}`)
	eventually(t, 10*time.Second, func() error {
		stats := h.ok(h.request("outbox_stats", map[string]any{}))
		if stats["outbox_pending"] != float64(1) {
			return fmt.Errorf("pending = %v", stats["outbox_pending"])
		}
		return nil
	})
	h.stop()
	if err := env.StartDendrite(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	h.start()
	h.fail(h.response("send", "too-late"), "expired")
	for _, seqs := range delivered(t, h.alice, []id.RoomID{room}, "stale") {
		if len(seqs) > 0 {
			t.Fatal("expired message delivered")
		}
	}
	msgs, err := h.alice.cli.Messages(context.Background(), room, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	for _, evt := range msgs.Chunk {
		if strings.Contains(string(evt.Content.VeryRaw), "stale alarm") {
			t.Fatal("expired message delivered")
		}
	}
}

// TestCrashAfterEchoSavedSendsOnce stands in for a crash in the narrowest window: the bridge sent
// a message, its sync already moved past the echo (and saved that token), and the bridge died
// before it recorded the request as done. The request is put back into the outbox as it was,
// Dendrite is restarted so that it has forgotten the transaction ID, and the bridge starts
// again: it must answer with the first event instead of sending the message a second time.
func TestCrashAfterEchoSavedSendsOnce(t *testing.T) {
	srv, err := testenv.Start(context.Background(), testenv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	h := newHarnessOn(t, srv, nil)
	room := h.sharedRoom(nil)
	body := burstBody("echo", 0, 0)
	first := h.ok(h.request("send", map[string]any{"to": room, "text": body}))["event_id"].(string)

	db, err := sql.Open("sqlite3-fk-wal", filepath.Join(h.env["DATA_DIR"], "matrix2mqtt.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var txnID string
	eventually(t, 30*time.Second, func() error {
		return db.QueryRow("SELECT txn_id FROM matrix2mqtt_echo WHERE event_id=$1", first).Scan(&txnID)
	})
	h.stop()

	request := fmt.Sprintf(`{"id":"echo-again","to":"%s","text":"%s"}`, room, body)
	if _, err := db.Exec(`INSERT INTO matrix2mqtt_outbox (action, lane, request, txn_id, created_at, expires_at, not_before, mqtt_key)
		VALUES ('send', $1, $2, $3, $4, 0, 0, '')`, room.String(), request, txnID, time.Now().UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if err := srv.StopDendrite(); err != nil {
		t.Fatal(err)
	}
	if err := srv.StartDendrite(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.start()
	again := h.ok(h.response("send", "echo-again"))["event_id"].(string)
	if again != first {
		t.Errorf("the request was answered with %s after the restart, first with %s", again, first)
	}
	time.Sleep(2 * time.Second) // a second copy, if one was sent, is in the room by now
	if got := delivered(t, h.alice, []id.RoomID{room}, "echo"); len(got[0]) != 1 {
		t.Fatalf("the message is in the room %d times", len(got[0]))
	}
}
