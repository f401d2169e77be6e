package media

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/internal/clock"
)

func newTestMedia(t *testing.T, cfg Config) *Media {
	t.Helper()
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 1 << 20
	}
	if cfg.FetchTimeout == 0 {
		cfg.FetchTimeout = 2 * time.Second
	}
	m, err := New(cfg, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestReadPath(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	write := func(p string, data []byte) {
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "ok.txt"), []byte("fine"))
	write(filepath.Join(dir, "empty.txt"), nil)
	write(filepath.Join(dir, "big.bin"), make([]byte, 2048))
	write(filepath.Join(outside, "secret.txt"), []byte("secret"))
	if err := os.Symlink(filepath.Join(outside, "secret.txt"), filepath.Join(dir, "escape.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "ok.txt"), filepath.Join(outside, "inward.txt")); err != nil {
		t.Fatal(err)
	}
	m := newTestMedia(t, Config{Dirs: []string{dir}, MaxBytes: 1024})
	for _, tc := range []struct {
		name, path, code, says string
	}{
		{"inside", filepath.Join(dir, "ok.txt"), "", ""},
		{"symlink from outside pointing in", filepath.Join(outside, "inward.txt"), "", ""},
		{"outside", filepath.Join(outside, "secret.txt"), "not_allowed", "MEDIA_DIRS"},
		{"symlink escaping", filepath.Join(dir, "escape.txt"), "not_allowed", "MEDIA_DIRS"},
		{"dot dot", dir + "/../" + filepath.Base(outside) + "/secret.txt", "not_allowed", "MEDIA_DIRS"},
		{"relative", "ok.txt", "invalid_request", "absolute"},
		{"missing", filepath.Join(dir, "nope.txt"), "invalid_request", "cannot be read"},
		{"directory", dir, "invalid_request", "regular file"},
		{"empty", filepath.Join(dir, "empty.txt"), "invalid_request", "empty"},
		{"too large", filepath.Join(dir, "big.bin"), "too_large", "MEDIA_MAX_BYTES"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, werr := m.ReadPath(tc.path)
			if tc.code == "" {
				if werr != nil || string(data) != "fine" {
					t.Fatalf("got %q, %v", data, werr)
				}
				return
			}
			if werr == nil || werr.Code != tc.code || !strings.Contains(werr.Message, tc.says) {
				t.Fatalf("got %v, want %s saying %q", werr, tc.code, tc.says)
			}
		})
	}
	if _, werr := newTestMedia(t, Config{}).ReadPath(filepath.Join(dir, "ok.txt")); werr == nil || werr.Code != "not_allowed" {
		t.Fatalf("without MEDIA_DIRS: %v", werr)
	}
}

func TestFetch(t *testing.T) {
	var otherGotAuth, otherGotKey string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherGotAuth, otherGotKey = r.Header.Get("Authorization"), r.Header.Get("X-Api-Key")
		_, _ = w.Write([]byte("other"))
	}))
	defer other.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
		case "/slow":
			time.Sleep(1500 * time.Millisecond)
		case "/big":
			_, _ = w.Write(make([]byte, 4096))
		case "/empty":
		case "/missing":
			http.NotFound(w, r)
		default:
			if r.Header.Get("Authorization") != "Bearer t0k" || r.Header.Get("X-Api-Key") != "k" {
				http.Error(w, "no", http.StatusUnauthorized)
				return
			}
			_, _ = w.Write([]byte("snapshot"))
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	otherHost := strings.TrimPrefix(other.URL, "http://")
	m := newTestMedia(t, Config{Hosts: []string{host, "localhost"}, MaxBytes: 1024, FetchTimeout: time.Second,
		Headers: []string{host + "=Authorization: Bearer t0k", host + "=X-Api-Key: k"}})
	for _, tc := range []struct {
		name, url, want, code, says string
	}{
		{"with headers", srv.URL + "/api/camera_proxy/camera.door", "snapshot", "", ""},
		{"host not allowed", other.URL + "/x", "", "not_allowed", "MEDIA_HOSTS"},
		{"not http", "file:///etc/passwd", "", "invalid_request", "http"},
		{"redirect to a host not allowed", srv.URL + "/redirect?to=" + url.QueryEscape(other.URL+"/x"), "", "not_allowed", "MEDIA_HOSTS"},
		{"redirect within the host", srv.URL + "/redirect?to=/snap", "snapshot", "", ""},
		{"times out", srv.URL + "/slow", "", "timeout", "MEDIA_FETCH_TIMEOUT"},
		{"too large", srv.URL + "/big", "", "too_large", "MEDIA_MAX_BYTES"},
		{"empty", srv.URL + "/empty", "", "invalid_request", "empty"},
		{"not found", srv.URL + "/missing", "", "invalid_request", "404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, werr := m.Fetch(context.Background(), tc.url)
			if tc.code == "" {
				if werr != nil || string(data) != tc.want {
					t.Fatalf("got %q, %v", data, werr)
				}
				return
			}
			if werr == nil || werr.Code != tc.code || !strings.Contains(werr.Message, tc.says) {
				t.Fatalf("got %v, want %s saying %q", werr, tc.code, tc.says)
			}
			if strings.Contains(werr.Message, "t0k") {
				t.Fatalf("the error names the token: %v", werr)
			}
		})
	}
	// A redirect to another allowed host does not carry this host's headers.
	m2 := newTestMedia(t, Config{Hosts: []string{host, otherHost}, Headers: []string{host + "=Authorization: Bearer t0k", host + "=X-Api-Key: k"}})
	if _, werr := m2.Fetch(context.Background(), srv.URL+"/redirect?to="+url.QueryEscape(other.URL+"/x")); werr != nil {
		t.Fatal(werr)
	}
	if otherGotAuth != "" || otherGotKey != "" {
		t.Fatalf("headers leaked to another host: %q %q", otherGotAuth, otherGotKey)
	}
}

func testImage(w, h int) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 90, 255})
		}
	}
	return img
}

func TestDescribe(t *testing.T) {
	var pngBuf, jpgBuf bytes.Buffer
	_ = png.Encode(&pngBuf, testImage(100, 50))
	_ = jpeg.Encode(&jpgBuf, testImage(1000, 500), nil)
	for _, tc := range []struct {
		name                         string
		data                         []byte
		kind, mimetype, filename     string
		wantKind, wantMime, wantName string
		wantW, wantH, wantThumbW     int
		code                         string
	}{
		{"png sniffed", pngBuf.Bytes(), "", "", "", "image", "image/png", "image.png", 100, 50, 0, ""},
		{"jpeg with thumbnail", jpgBuf.Bytes(), "", "", "door", "image", "image/jpeg", "door.jpg", 1000, 500, 400, ""},
		{"name kept", pngBuf.Bytes(), "", "", "snap.PNG", "image", "image/png", "snap.PNG", 100, 50, 0, ""},
		{"image sent as file", pngBuf.Bytes(), "file", "", "", "file", "image/png", "file.png", 0, 0, 0, ""},
		{"pdf", []byte("%PDF-1.7 ..."), "", "", "", "file", "application/pdf", "file.pdf", 0, 0, 0, ""},
		{"unknown bytes by extension", []byte{0, 1, 2, 3}, "", "", "clip.mp3", "audio", "audio/mpeg", "clip.mp3", 0, 0, 0, ""},
		{"unknown bytes", []byte{0, 1, 2, 3}, "", "", "", "file", "application/octet-stream", "file.bin", 0, 0, 0, ""},
		{"given mimetype", []byte{0, 1, 2, 3}, "", "video/mp4", "", "video", "video/mp4", "video.mp4", 0, 0, 0, ""},
		{"voice", []byte("OggS\x00\x02...."), "voice", "", "", "voice", "audio/ogg", "voice.ogg", 0, 0, 0, ""},
		{"broken image", []byte("\x89PNG\r\n\x1a\nbroken"), "", "", "", "image", "image/png", "image.png", 0, 0, 0, ""},
		{"unknown kind", pngBuf.Bytes(), "hologram", "", "", "", "", "", 0, 0, 0, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, werr := Describe(context.Background(), tc.data, Given{Kind: tc.kind, Mimetype: tc.mimetype, Filename: tc.filename}, 400)
			if tc.code != "" {
				if werr == nil || werr.Code != tc.code {
					t.Fatalf("got %v, want %s", werr, tc.code)
				}
				return
			}
			if werr != nil {
				t.Fatal(werr)
			}
			if f.Kind != tc.wantKind || f.Mimetype != tc.wantMime || f.Filename != tc.wantName || f.Width != tc.wantW || f.Height != tc.wantH || f.ThumbnailWidth != tc.wantThumbW || f.Size != len(tc.data) {
				t.Fatalf("got %+v", f)
			}
			if tc.wantW > 0 && f.Blurhash == "" {
				t.Fatal("no blurhash")
			}
			if tc.wantThumbW > 0 {
				cfg, err := jpeg.DecodeConfig(bytes.NewReader(f.Thumbnail))
				if err != nil || cfg.Width != tc.wantThumbW || cfg.Height != f.ThumbnailHeight {
					t.Fatalf("thumbnail %+v, %v", cfg, err)
				}
			}
		})
	}
}

// TestDescribeWaitsForAFreeCore: with every decoding slot taken, Describe waits, and decodes
// once a slot frees up.
func TestDescribeWaitsForAFreeCore(t *testing.T) {
	var buf bytes.Buffer
	_ = png.Encode(&buf, testImage(100, 50))
	for range cap(decoding) {
		decoding <- struct{}{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if f, werr := Describe(ctx, buf.Bytes(), Given{}, 400); werr != nil || f.Width != 0 || f.Blurhash != "" {
		t.Fatalf("decoded while every slot was taken: %+v, %v", f, werr)
	}
	done := make(chan File)
	go func() {
		f, _ := Describe(context.Background(), buf.Bytes(), Given{}, 400)
		done <- f
	}()
	select {
	case f := <-done:
		t.Fatalf("decoded while every slot was taken: %+v", f)
	case <-time.After(50 * time.Millisecond):
	}
	<-decoding
	if f := <-done; f.Width != 100 || f.Blurhash == "" {
		t.Fatalf("got %+v once a slot was free", f)
	}
	for range cap(decoding) - 1 {
		<-decoding
	}
}

func TestParseHeaders(t *testing.T) {
	for _, tc := range []struct {
		name string
		list []string
		ok   bool
	}{
		{"one", []string{"ha.local:8123=Authorization: Bearer abc=="}, true},
		{"no host", []string{"=Authorization: x"}, false},
		{"no colon", []string{"ha=Authorization"}, false},
		{"no equals", []string{"Authorization: x"}, false},
		{"space in name", []string{"ha=Bad Name: x"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := parseHeaders(tc.list)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v", err)
			}
			if err != nil && strings.Contains(err.Error(), "x") && strings.Contains(err.Error(), "Authorization: x") {
				t.Fatalf("the error quotes a value: %v", err)
			}
			if tc.ok && h["ha.local:8123"].Get("Authorization") != "Bearer abc==" {
				t.Fatalf("headers = %v", h)
			}
		})
	}
}

func FuzzParseHeaders(f *testing.F) {
	f.Add("ha.local:8123=Authorization: Bearer abc")
	f.Add("=:")
	f.Fuzz(func(t *testing.T, entry string) {
		h, err := parseHeaders([]string{entry})
		if err == nil && len(h) != 1 {
			t.Fatalf("accepted %q without a host", entry)
		}
	})
}

func FuzzDescribe(f *testing.F) {
	var buf bytes.Buffer
	_ = png.Encode(&buf, testImage(40, 30))
	f.Add(buf.Bytes(), "", "")
	f.Add([]byte("GIF89a"), "", "x")
	// Without ffprobe and ffmpeg: a process per input would leave little fuzzing; FuzzParseProbe
	// covers what the bridge reads from them.
	f.Setenv("PATH", "")
	f.Fuzz(func(t *testing.T, data []byte, kind, filename string) {
		file, werr := Describe(context.Background(), data, Given{Kind: kind, Filename: filename}, 32)
		if werr != nil {
			return
		}
		if file.Filename == "" || strings.ContainsAny(file.Filename, "/\\") || file.Mimetype == "" {
			t.Fatalf("described %q as %+v", filename, file)
		}
	})
}

func TestSaveAndPrune(t *testing.T) {
	now := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name      string
		retention time.Duration
		maxTotal  int64
		old       map[string]time.Duration // name → age
		want      []string
	}{
		{"keeps recent", time.Hour, 0, map[string]time.Duration{"a.jpg": time.Minute}, []string{"a.jpg", "ev_1.png"}},
		{"removes expired", time.Hour, 0, map[string]time.Duration{"a.jpg": 2 * time.Hour, "b.jpg": time.Minute}, []string{"b.jpg", "ev_1.png"}},
		{"retention off", 0, 0, map[string]time.Duration{"a.jpg": 1000 * time.Hour}, []string{"a.jpg", "ev_1.png"}},
		{"oldest go over the total", 0, 25, map[string]time.Duration{"a.jpg": 3 * time.Minute, "b.jpg": 2 * time.Minute, "c.jpg": time.Minute}, []string{"c.jpg", "ev_1.png"}},
		{"the new file stays", 0, 5, map[string]time.Duration{"a.jpg": time.Minute}, []string{"ev_1.png"}},
		{"an abandoned download goes, one being written stays", 0, 0,
			map[string]time.Duration{".download-old": 2 * time.Hour, ".download-new": time.Minute}, []string{".download-new", "ev_1.png"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, age := range tc.old {
				p := filepath.Join(dir, name)
				if err := os.WriteFile(p, []byte("0123456789"), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(p, now.Add(-age), now.Add(-age)); err != nil {
					t.Fatal(err)
				}
			}
			m := newTestMedia(t, Config{DownloadDir: dir, Retention: tc.retention, MaxTotalBytes: tc.maxTotal})
			path, err := m.Save("$ev/1", "../pic.PNG", "image/png", []byte("0123456789"), now)
			if err != nil {
				t.Fatal(err)
			}
			if path != filepath.Join(dir, "ev_1.png") {
				t.Fatalf("path = %s", path)
			}
			if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
				t.Fatalf("mode %v", st.Mode())
			}
			var got []string
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				got = append(got, e.Name())
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("left %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPruneSpool(t *testing.T) {
	m := newTestMedia(t, Config{})
	kept, err := m.Spool([]byte("queued"))
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := m.Spool([]byte("never committed"))
	if err != nil {
		t.Fatal(err)
	}
	outbox := []json.RawMessage{[]byte(`{"to":"x","spooled":"` + kept + `"}`), []byte(`{"to":"x","text":"hi"}`)}
	each := func(fn func(json.RawMessage)) error {
		for _, r := range outbox {
			fn(r)
		}
		return nil
	}
	if err := m.PruneSpool(each); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReadSpool(kept); err != nil {
		t.Fatalf("the queued file went: %v", err)
	}
	if _, err := m.ReadSpool(orphan); err == nil {
		t.Fatal("the orphan stayed")
	}
}

// TestRunPruning: the downloads are pruned at start and every hour, not only when a file is
// downloaded; a download being written is left alone, one a crash left unfinished is removed.
func TestRunPruning(t *testing.T) {
	clk := clock.NewFake()
	dir := t.TempDir()
	for name, age := range map[string]time.Duration{"old.jpg": 2 * time.Hour, "recent.jpg": 30 * time.Minute, tempPrefix + "1": 30 * time.Minute, tempPrefix + "2": 3 * time.Hour} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("0123456789"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, clk.Now().Add(-age), clk.Now().Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	left := func() string {
		entries, _ := os.ReadDir(dir)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return strings.Join(names, ",")
	}
	m := newTestMedia(t, Config{DownloadDir: dir, Retention: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.RunPruning(ctx, clk)
	}()
	defer func() {
		cancel()
		<-done
	}()
	<-clk.Asked // pruned at start, now waiting
	if got := left(); got != tempPrefix+"1,recent.jpg" {
		t.Fatalf("after start: %s", got)
	}
	clk.Advance(pruneEvery)
	<-clk.Asked
	if got := left(); got != "" {
		t.Fatalf("an hour later: %s", got)
	}
}
