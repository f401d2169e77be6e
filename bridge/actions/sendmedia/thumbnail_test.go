package sendmedia

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/media"
)

// TestThumbnailKeptInTheRow: a thumbnail given by path is read when the request is prepared and
// travels in the stored request as data, so that after a restart (a JSON round trip, nothing
// decoded kept) it loads the same picture even when the file is gone.
func TestThumbnailKeptInTheRow(t *testing.T) {
	dir := t.TempDir()
	var pic bytes.Buffer
	_ = png.Encode(&pic, image.NewGray(image.Rect(0, 0, 8, 4)))
	path := filepath.Join(dir, "snap.png")
	if err := os.WriteFile(path, pic.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := media.New(media.Config{Dirs: []string{dir}, MaxBytes: 1 << 20}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	thumb := &Thumbnail{Path: path}
	if werr := thumb.validate(); werr != nil {
		t.Fatal(werr)
	}
	if werr := thumb.prepare(&actions.Env{Media: m}); werr != nil {
		t.Fatal(werr)
	}
	stored, err := json.Marshal(thumb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	var restored Thumbnail
	if err := json.Unmarshal(stored, &restored); err != nil {
		t.Fatal(err)
	}
	got, err := restored.load(context.Background(), m)
	if err != nil || !bytes.Equal(got, pic.Bytes()) || restored.Path != "" {
		t.Fatalf("loaded %d bytes, %v, from %s; want the %d of the file", len(got), err, stored, pic.Len())
	}
}
