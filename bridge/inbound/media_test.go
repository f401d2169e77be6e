package inbound

import (
	"context"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/sendmedia"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
	"github.com/matrix2mqtt/matrix2mqtt/matrix"
)

// TestMediaMessagesHeldForDownload: with MediaDownloads, a media message is not published at
// once but queued as a media_download (committed before the batch is marked published); other
// messages go out as before.
func TestMediaMessagesHeldForDownload(t *testing.T) {
	r := &recorder{published: map[id.EventID]bool{}}
	in := newInbound(r)
	in.Holder = MediaDownloads{}
	pic := message("!other:hs", "$pic", "@bob:hs", "")
	pic.Payload.(*wire.Message).Media = &wire.Media{MXC: "mxc://hs/abc", Filename: "pic.jpg"}
	noFile := message("!other:hs", "$nofile", "@bob:hs", "")
	noFile.Payload.(*wire.Message).Media = &wire.Media{Filename: "broken.jpg"}
	batch := &matrix.Batch{Events: []matrix.Event{message("!other:hs", "$m", "@bob:hs", "hi"), pic, noFile}}
	if err := in.HandleSync(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"publish m2m/room/!other:hs/message",
		"publish m2m/room/!other:hs/message",
		"acked m2m/room/!other:hs/message",
		"acked m2m/room/!other:hs/message",
		"queued " + sendmedia.ActionMediaDownload,
		"marked",
	}
	if got := strings.Join(r.log, "\n"); got != strings.Join(want, "\n") {
		t.Fatalf("calls:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	// Handed over again after a crash that came before the batch was marked published: the
	// download queued before is not queued twice.
	r.log, r.published = nil, map[id.EventID]bool{}
	if err := in.HandleSync(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.log, "\n"); strings.Contains(got, "queued") {
		t.Fatalf("queued again:\n%s", got)
	}
	for _, tc := range []struct {
		name string
		ev   matrix.Event
		held bool
	}{
		{"media message", pic, true},
		{"text message", message("!r:hs", "$t", "@bob:hs", "x"), false},
		{"media without mxc", noFile, false},
		{"reaction", matrix.Event{Kind: wire.KindReaction, Payload: &wire.Reaction{}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j, held := MediaDownloads{}.Hold(tc.ev, "m2m/room/r/message")
			if held != tc.held {
				t.Fatalf("held = %v", held)
			}
			if held && (j.Request.(*sendmedia.MediaDownload).Topic != "m2m/room/r/message" || j.Request.Lane() != "media_download/!other:hs") {
				t.Fatalf("job = %+v", j.Request)
			}
		})
	}
}

// Seen reports the keys of jobs queued before.
func (r *recorder) Seen(_ context.Context, key string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.keys[key], nil
}
