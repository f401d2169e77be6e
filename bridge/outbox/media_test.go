package outbox

import (
	"encoding/base64"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/sendmedia"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/media"
)

// TestSendMediaUploadsOnce: a send_media whose send fails after the upload sends the saved
// event again with the same transaction ID, without a second upload, and its spooled file is
// removed once it is answered.
func TestSendMediaUploadsOnce(t *testing.T) {
	eachDB(t, func(t *testing.T, to *testOutbox) {
		dataDir := t.TempDir()
		m, err := media.New(media.Config{MaxBytes: 1 << 20, FetchTimeout: time.Second, ThumbnailPx: 800}, dataDir)
		if err != nil {
			t.Fatal(err)
		}
		to.Env.Media = m
		req := &sendmedia.SendMedia{FileRequest: sendmedia.FileRequest{Data: base64.StdEncoding.EncodeToString([]byte("hello file")), Filename: "note.txt"}}
		req.To.To = "!room:hs"
		if err := req.Validate(to.Env.Targets); err != nil {
			t.Fatal(err)
		}
		if err := req.Prepare(&to.Env); err != nil {
			t.Fatal(err)
		}
		spooled, _ := filepath.Glob(filepath.Join(dataDir, "spool", "*"))
		if len(spooled) != 1 {
			t.Fatalf("spooled files = %v", spooled)
		}
		if st, err := os.Stat(spooled[0]); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("spooled file: %v %v", st, err)
		}
		to.hs.Errs = []error{nil, errNetwork} // the upload works, the send fails
		e := to.add(t, Job{Action: "send_media", Request: req})
		done := to.run(e)
		to.sleeps(t)
		to.clock.Advance(2 * time.Second)
		r := to.responses.Next(t)
		<-done
		if r.Status != "ok" {
			t.Fatalf("response %+v", r)
		}
		if len(to.hs.Uploads) != 1 || string(to.hs.Uploads[0]) != "hello file" {
			t.Fatalf("uploads = %q", to.hs.Uploads)
		}
		if len(to.hs.Sent) != 1 || to.hs.Sent[0] != e.TxnID {
			t.Fatalf("sent %v, want one send with %s", to.hs.Sent, e.TxnID)
		}
		if left, _ := filepath.Glob(filepath.Join(dataDir, "spool", "*")); len(left) != 0 {
			t.Fatalf("spool not cleaned: %v", left)
		}
	})
}
