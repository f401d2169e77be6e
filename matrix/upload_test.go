package matrix

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"
)

// TestUploadRefusedWhenEncryptionUnknown: when the state store cannot tell whether the room is
// encrypted, Upload fails without sending the file to the homeserver (it might go out in
// plaintext for an encrypted room).
func TestUploadRefusedWhenEncryptionUnknown(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.URL.Path)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/config") {
			_, _ = w.Write([]byte(`{"m.upload.size":1048576}`))
			return
		}
		_, _ = w.Write([]byte(`{"content_uri":"mxc://hs/plain"}`))
	}))
	defer hs.Close()
	raw, err := dbutil.NewWithDialect("file:"+filepath.Join(t.TempDir(), "m.db")+"?_txlock=immediate", "sqlite3-fk-wal")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Homeserver: hs.URL, UserID: "@bot:hs", SyncTimeout: time.Second}
	c, err := New(context.Background(), cfg, raw, Options{})
	if err != nil {
		t.Fatal(err)
	}
	raw.Close() // the state store fails from now on
	ref, err := c.Upload(context.Background(), "!secret:hs", []byte("camera snapshot"), "image/jpeg", "snap.jpg")
	if err == nil || !strings.Contains(err.Error(), "failed to tell whether !secret:hs is encrypted") {
		t.Fatalf("Upload = %+v, %v; want the state store's error", ref, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 0 {
		t.Fatalf("the homeserver was asked %v", asked)
	}
}
