package intake

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/actionstest"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/catalog"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/media"
	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
)

// TestPayloadLimit: actions that carry a file may be as large as MEDIA_MAX_BYTES (in base64 in
// a JSON request, raw on the shortcut); the others stay within MAX_PAYLOAD_BYTES.
func TestPayloadLimit(t *testing.T) {
	in := New(Deps{Registry: catalog.Default(), Queue: &fakeQueue{}, Clock: clock.NewFake(), MaxPayloadBytes: 65536, MaxFileBytes: 3 << 20})
	for _, tc := range []struct {
		name, action, target string
		want                 int
		setting              string
	}{
		{"text request", "send", "", 65536, "MAX_PAYLOAD_BYTES"},
		{"text shortcut", "send", "kitchen", 65536, "MAX_PAYLOAD_BYTES"},
		{"media request", "send_media", "", 4<<20 + 65536, "MEDIA_MAX_BYTES"},
		{"media shortcut", "send_media", "kitchen", 3 << 20, "MEDIA_MAX_BYTES"},
		{"unknown action", "nope", "", 65536, "MAX_PAYLOAD_BYTES"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, setting := in.payloadLimit(tc.action, tc.target)
			if got != tc.want || !strings.HasPrefix(setting, tc.setting) {
				t.Fatalf("limit %d (%s), want %d (%s)", got, setting, tc.want, tc.setting)
			}
		})
	}
}

// TestSpoolReleasedWhenNotCommitted: the file a send_media request spooled in Prepare is removed
// when the request is not committed: a repeat of a request id (stored or earlier in the batch),
// or one the outbox refuses. The one committed keeps its file.
func TestSpoolReleasedWhenNotCommitted(t *testing.T) {
	dataDir := t.TempDir()
	m, err := media.New(media.Config{MaxBytes: 1 << 20}, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	ti := newTestIntakeWith(t, func(d *Deps) {
		d.Env.Media = m
		d.MaxFileBytes = 1 << 20
	})
	ti.queue.accepted = map[string]map[string]json.RawMessage{
		"send_media": {"done": json.RawMessage(`{"id":"done","status":"ok","data":{"event_id":"$kept"}}`)},
	}
	ti.queue.refuse = "broadcast"
	payload := func(id string) string { return `{"id":"` + id + `","to":"kitchen","data":"aGVsbG8="}` }
	for _, p := range []string{payload("done"), payload("new"), payload("new")} {
		ti.offer("m2m/bridge/request/send_media", p)
	}
	ti.offer("m2m/bridge/request/broadcast", `{"id":"b","to":["kitchen"],"media":{"data":"aGVsbG8="}}`)
	actionstest.WaitFor(t, func() bool { return strings.Count(ti.queue.calls(), "ack ") == 4 })
	for range 2 { // the kept answer to "done", and broadcast's refusal
		ti.responses.Next(t)
	}
	spooled, err := os.ReadDir(filepath.Join(dataDir, "spool"))
	if err != nil {
		t.Fatal(err)
	}
	if len(spooled) != 1 {
		t.Fatalf("the spool holds %d files, want the committed request's only", len(spooled))
	}
	if calls := ti.queue.calls(); strings.Count(calls, "add send_media") != 1 {
		t.Fatalf("calls:\n%s", calls)
	}
}
