package rooms_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/actionstest"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/catalog"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/rooms"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/media"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// memProgress keeps a delivery's progress in memory.
type memProgress struct{ raw []byte }

func (p *memProgress) Load(v any) (bool, error) {
	if p.raw == nil {
		return false, nil
	}
	return true, json.Unmarshal(p.raw, v)
}

func (p *memProgress) Save(_ context.Context, v any) (err error) {
	p.raw, err = json.Marshal(v)
	return err
}

// TestBroadcastMediaUploadsOncePerMode: an image broadcast to two plain rooms and an encrypted
// one is uploaded twice (once in the clear, once encrypted); after a send fails for a while,
// the retry neither uploads again nor sends a room a second copy.
func TestBroadcastMediaUploadsOncePerMode(t *testing.T) {
	img := pngBytes(t)
	m, err := media.New(media.Config{MaxBytes: 1 << 20, ThumbnailPx: 800}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tg := targets.New(targets.Config{})
	payload := fmt.Sprintf(`{"to":["!a:hs","!b:hs","!c:hs"],"media":{"data":%q,"caption":"look"}}`, base64.StdEncoding.EncodeToString(img))
	req, werr := catalog.Default().Parse("broadcast", "", []byte(payload), tg)
	if werr != nil {
		t.Fatal(werr)
	}
	env := actions.Env{Targets: tg, Media: m}
	if werr := req.(actions.Preparer).Prepare(&env); werr != nil {
		t.Fatal(werr)
	}
	// What the outbox stores holds the spooled name, not the file.
	stored, _ := json.Marshal(req)
	if strings.Contains(string(stored), base64.StdEncoding.EncodeToString(img)[:16]) || !strings.Contains(string(stored), `"spooled"`) {
		t.Fatalf("stored request = %s", stored)
	}
	// Calls: upload plain, send !a, upload encrypted, send !b (fails, may pass), send !c.
	hs := &actionstest.Matrix{Encrypted: map[id.RoomID]bool{"!b:hs": true},
		Errs: []error{nil, nil, nil, context.DeadlineExceeded}}
	env.Matrix = hs
	progress := &memProgress{}
	durable, err := catalog.Default().Stored("broadcast", stored)
	if err != nil {
		t.Fatal(err)
	}
	d := &actions.Delivery{Env: env, TxnID: "t", Progress: progress}
	if _, err := durable.Deliver(context.Background(), d); err == nil {
		t.Fatal("the failed send was not retried")
	}
	durable, _ = catalog.Default().Stored("broadcast", stored) // as after a restart
	data, err := durable.Deliver(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	if res := data.(rooms.BroadcastData); res.Sent != 3 || res.Failed != 0 {
		t.Fatalf("data = %+v", res)
	}
	if len(hs.Uploads) != 2 || string(hs.Uploads[0]) != string(img) || string(hs.Uploads[1]) != string(img) {
		t.Fatalf("%d uploads", len(hs.Uploads))
	}
	if want := []string{"t", "t.2", "t.1"}; fmt.Sprint(hs.Sent) != fmt.Sprint(want) {
		t.Fatalf("sent %v, want %v", hs.Sent, want)
	}
	for i, c := range hs.Contents {
		msg := c.(*event.MessageEventContent)
		encrypted := hs.Sent[i] == "t.1"
		if msg.MsgType != event.MsgImage || msg.Body != "look" || (msg.File != nil) != encrypted || (msg.URL != "") == encrypted {
			t.Fatalf("content %d = %+v", i, msg)
		}
	}
	if err := durable.(actions.Finisher).Finished(&env); err != nil {
		t.Fatal(err)
	}
}

// TestBroadcastMediaValidation: media goes without a text, with one source, and spooled is
// the bridge's own.
func TestBroadcastMediaValidation(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		mention string
	}{
		{"media and text", `{"to":["!a:hs"],"text":"x","media":{"mxc":"mxc://hs/a"}}`, "without 'text'"},
		{"two sources", `{"to":["!a:hs"],"media":{"mxc":"mxc://hs/a","url":"https://h/a"}}`, "exactly one"},
		{"no source", `{"to":["!a:hs"],"media":{"caption":"x"}}`, "exactly one"},
		{"unknown kind", `{"to":["!a:hs"],"media":{"mxc":"mxc://hs/a","kind":"hologram"}}`, "kind"},
		{"spooled", `{"to":["!a:hs"],"media":{"mxc":"mxc://hs/a"},"spooled":"0123456789abcdef01234567"}`, "field 'spooled' is not known"},
		{"unknown media field", `{"to":["!a:hs"],"media":{"mxc":"mxc://hs/a","captoin":"x"}}`, "captoin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, werr := catalog.Default().Parse("broadcast", "", []byte(tc.payload), targets.New(targets.Config{}))
			if werr == nil || werr.Code != wire.CodeInvalidRequest || !strings.Contains(werr.Message, tc.mention) {
				t.Fatalf("error = %v, want invalid_request mentioning %q", werr, tc.mention)
			}
		})
	}
}
