package media

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/attachment"
)

// fakeRepo is a content repository with an upload limit that keeps the last upload.
type fakeRepo struct {
	uploads  atomic.Int32
	last     []byte
	lastType string
}

func newTransfer(t *testing.T, repo *fakeRepo, limit string) *Transfer {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/media/config"):
			_, _ = io.WriteString(w, `{"m.upload.size":`+limit+`}`)
		case strings.HasSuffix(r.URL.Path, "/media/v3/upload"):
			repo.uploads.Add(1)
			repo.last, _ = io.ReadAll(r.Body)
			repo.lastType = r.Header.Get("Content-Type")
			_, _ = io.WriteString(w, `{"content_uri":"mxc://hs/file1"}`)
		case strings.Contains(r.URL.Path, "/v1/media/download/hs/file1"):
			_, _ = w.Write(repo.last)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	cli, err := mautrix.NewClient(srv.URL, "@bot:hs", "token")
	if err != nil {
		t.Fatal(err)
	}
	return New(cli)
}

func TestUploadAndDownload(t *testing.T) {
	ctx := context.Background()
	plain := bytes.Repeat([]byte("snapshot "), 50)
	for _, tc := range []struct {
		name    string
		encrypt bool
	}{
		{"plain", false},
		{"encrypted", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := &fakeRepo{}
			tr := newTransfer(t, repo, "100000")
			ref, err := tr.Upload(ctx, plain, "image/jpeg", "door.jpg", tc.encrypt)
			if err != nil {
				t.Fatal(err)
			}
			var file *attachment.EncryptedFile
			if tc.encrypt {
				if ref.URL != "" || ref.File == nil || ref.File.URL != "mxc://hs/file1" || bytes.Equal(repo.last, plain) || repo.lastType != "application/octet-stream" {
					t.Fatalf("ref %+v, uploaded type %s", ref, repo.lastType)
				}
				k := ref.File.Key
				if k.KeyType != "oct" || k.Algorithm != "A256CTR" || !k.Extractable || strings.Join(k.KeyOps, ",") != "encrypt,decrypt" || ref.File.Version != "v2" || ref.File.Hashes.SHA256 == "" {
					t.Fatalf("key = %+v", ref.File)
				}
				file = roundTrip(t, &ref.File.EncryptedFile) // as a receiver gets it, from the event
			} else if ref.URL != "mxc://hs/file1" || ref.File != nil || !bytes.Equal(repo.last, plain) || repo.lastType != "image/jpeg" {
				t.Fatalf("ref %+v, uploaded type %s", ref, repo.lastType)
			}
			got, err := tr.Download(ctx, "mxc://hs/file1", file, 1<<20)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("download: %v", err)
			}
			if _, err := tr.Download(ctx, "mxc://hs/file1", file, 10); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("over the cap: %v", err)
			}
			if tc.encrypt {
				bad := roundTrip(t, &ref.File.EncryptedFile)
				bad.Hashes.SHA256 = "AAAA" + bad.Hashes.SHA256[4:]
				if _, err := tr.Download(ctx, "mxc://hs/file1", bad, 1<<20); !errors.Is(err, ErrBadFile) {
					t.Fatalf("wrong hash: %v", err)
				}
			}
		})
	}
}

// roundTrip copies an EncryptedFile through JSON.
func roundTrip(t *testing.T, f *attachment.EncryptedFile) *attachment.EncryptedFile {
	t.Helper()
	raw, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	var out attachment.EncryptedFile
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

// TestUploadLimit: a file over the homeserver's m.upload.size is refused before it is uploaded.
func TestUploadLimit(t *testing.T) {
	repo := &fakeRepo{}
	tr := newTransfer(t, repo, "100")
	_, err := tr.Upload(context.Background(), make([]byte, 101), "image/png", "x.png", false)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "m.upload.size") {
		t.Fatalf("err = %v", err)
	}
	if n := repo.uploads.Load(); n != 0 {
		t.Fatalf("uploaded %d times", n)
	}
	if _, err := tr.Upload(context.Background(), make([]byte, 100), "image/png", "x.png", false); err != nil {
		t.Fatal(err)
	}
}
