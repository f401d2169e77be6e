package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/internal/jsclient"
	"github.com/matrix2mqtt/matrix2mqtt/internal/testenv"
)

// testPNG draws a w×h PNG (a gradient, so that it does not compress to nothing).
func testPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x + y), 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// mediaEvent fetches a media message as alice sees it.
func (h *harness) mediaEvent(t *testing.T, room id.RoomID, data map[string]any) *event.MessageEventContent {
	t.Helper()
	return h.alice.event(t, room, id.EventID(data["event_id"].(string))).Content.AsMessage()
}

// download fetches an mxc as alice.
func (u *user) download(t *testing.T, uri id.ContentURIString) []byte {
	t.Helper()
	parsed, err := uri.Parse()
	if err != nil {
		t.Fatalf("bad mxc %q: %v", uri, err)
	}
	data, err := u.cli.DownloadBytes(context.Background(), parsed)
	if err != nil {
		t.Fatalf("download %s: %v", uri, err)
	}
	return data
}

// uploadsBy counts the files user uploaded, from the homeserver's media database.
func uploadsBy(t *testing.T, user id.UserID) int {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(env.Dir, "dendrite", "mediaapi.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM mediaapi_media_repository WHERE user_id = $1", user).Scan(&n); err != nil {
		t.Fatalf("failed to count uploads: %v", err)
	}
	return n
}

// mediaServer serves files on 127.0.0.1, with /slow answering late and /redirect?to= redirecting.
func mediaServer(t *testing.T, files map[string][]byte, wantAuth string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/slow":
			time.Sleep(3 * time.Second)
		case strings.HasPrefix(r.URL.Path, "/redirect"):
			http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
			return
		}
		if wantAuth != "" && r.Header.Get("Authorization") != wantAuth {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		data, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(data)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestSendMediaSources: each source lands in the room with its bytes and Element X's integer
// info; a large image gets a thumbnail that is a smaller image.
func TestSendMediaSources(t *testing.T) {
	dir := t.TempDir()
	small := testPNG(t, 64, 48)
	big := testPNG(t, 1200, 900)
	if err := os.WriteFile(filepath.Join(dir, "snap.png"), small, 0o644); err != nil {
		t.Fatal(err)
	}
	cam := mediaServer(t, map[string][]byte{"/api/camera_proxy/camera.door": big}, "Bearer ha-token")
	camHost := strings.TrimPrefix(cam.URL, "http://")
	h := newHarness(t, map[string]string{
		"MEDIA_DIRS":         dir,
		"MEDIA_HOSTS":        camHost,
		"MEDIA_HEADERS":      camHost + "=Authorization: Bearer ha-token",
		"MEDIA_THUMBNAIL_PX": "320",
	})
	room := h.sharedRoom(nil)
	to := room.String()

	check := func(t *testing.T, c *event.MessageEventContent, want []byte, msgtype event.MessageType, mimetype string) {
		t.Helper()
		if c.MsgType != msgtype || c.Info == nil || c.Info.MimeType != mimetype || c.Info.Size != len(want) {
			t.Fatalf("content = %+v info %+v", c, c.Info)
		}
		if c.File != nil || c.URL == "" {
			t.Fatalf("unencrypted room: want url and no file, got %+v", c)
		}
		if got := h.alice.download(t, c.URL); !bytes.Equal(got, want) {
			t.Fatalf("downloaded %d bytes, want %d (sha %x vs %x)", len(got), len(want), sha256.Sum256(got), sha256.Sum256(want))
		}
	}

	t.Run("data", func(t *testing.T) {
		data := h.ok(h.request("send_media", map[string]any{"to": to, "data": base64.StdEncoding.EncodeToString(small), "caption": "front door"}))
		c := h.mediaEvent(t, room, data)
		check(t, c, small, event.MsgImage, "image/png")
		if c.Body != "front door" || c.FileName != "image.png" || c.Info.Width != 64 || c.Info.Height != 48 || c.Info.AnoaBlurhash == "" {
			t.Fatalf("caption/filename/dimensions: %+v info %+v", c, c.Info)
		}
		if c.Info.ThumbnailURL != "" {
			t.Fatalf("small image got a thumbnail: %+v", c.Info)
		}
	})
	t.Run("path", func(t *testing.T) {
		data := h.ok(h.request("send_media", map[string]any{"to": to, "path": filepath.Join(dir, "snap.png"), "caption_markdown": "**motion**"}))
		c := h.mediaEvent(t, room, data)
		check(t, c, small, event.MsgImage, "image/png")
		if c.FileName != "snap.png" || c.Format != event.FormatHTML || !strings.Contains(c.FormattedBody, "<strong>motion</strong>") {
			t.Fatalf("content = %+v", c)
		}
	})
	t.Run("url with headers and thumbnail", func(t *testing.T) {
		data := h.ok(h.request("send_media", map[string]any{"to": to, "url": cam.URL + "/api/camera_proxy/camera.door", "filename": "door"}))
		c := h.mediaEvent(t, room, data)
		check(t, c, big, event.MsgImage, "image/png")
		if c.FileName != "door.png" || c.Body != "door.png" || c.FormattedBody != "" || c.Info.Width != 1200 || c.Info.Height != 900 {
			t.Fatalf("content = %+v info %+v", c, c.Info)
		}
		ti := c.Info.ThumbnailInfo
		if c.Info.ThumbnailURL == "" || ti == nil || ti.Width != 320 || ti.Height != 240 || ti.MimeType != "image/jpeg" {
			t.Fatalf("thumbnail: %+v %+v", c.Info, ti)
		}
		thumb, _, err := image.DecodeConfig(bytes.NewReader(h.alice.download(t, c.Info.ThumbnailURL)))
		if err != nil || thumb.Width != 320 || thumb.Height != 240 {
			t.Fatalf("thumbnail decodes to %+v, %v", thumb, err)
		}
	})
	t.Run("mxc", func(t *testing.T) {
		first := h.mediaEvent(t, room, h.ok(h.request("send_media", map[string]any{"to": to, "data": base64.StdEncoding.EncodeToString([]byte("%PDF-1.4 a report")), "filename": "report.pdf"})))
		data := h.ok(h.request("send_media", map[string]any{"to": to, "mxc": string(first.URL), "filename": "again.pdf"}))
		c := h.mediaEvent(t, room, data)
		check(t, c, []byte("%PDF-1.4 a report"), event.MsgFile, "application/pdf")
		if c.FileName != "again.pdf" || c.URL != first.URL {
			t.Fatalf("content = %+v; want the url %s again, not a new upload", c, first.URL)
		}
	})
	t.Run("binary shortcut", func(t *testing.T) {
		h.rec.publish(h.base+"/send_media/"+to, 1, string(small))
		resp := h.rec.wait(30*time.Second, "shortcut response", func(m message) bool {
			return m.Topic == h.base+"/bridge/response/send_media" && !strings.Contains(string(m.Payload), `"id":"req-`)
		}).json(t)
		c := h.mediaEvent(t, room, h.ok(resp))
		check(t, c, small, event.MsgImage, "image/png")
	})
	t.Run("voice", func(t *testing.T) {
		ogg := append([]byte("OggS\x00\x02"), bytes.Repeat([]byte{1}, 200)...)
		data := h.ok(h.request("send_media", map[string]any{"to": to, "data": base64.StdEncoding.EncodeToString(ogg), "kind": "voice", "duration_ms": 1500, "waveform": []int{0, 512, 1024}}))
		raw := h.alice.event(t, room, id.EventID(data["event_id"].(string))).Content.Raw
		audio, _ := raw["org.matrix.msc1767.audio"].(map[string]any)
		if raw["msgtype"] != "m.audio" || raw["org.matrix.msc3245.voice"] == nil || audio["duration"] != float64(1500) || fmt.Sprint(audio["waveform"]) != "[0 512 1024]" {
			t.Fatalf("voice content = %v", raw)
		}
		if info := raw["info"].(map[string]any); info["duration"] != float64(1500) || info["mimetype"] != "audio/ogg" {
			t.Fatalf("voice info = %v", info)
		}
	})
	t.Run("thumbnail given by url and by path", func(t *testing.T) {
		pdf := []byte("%PDF-1.4 the camera's report")
		for _, tc := range []struct {
			thumbnail map[string]any
			w, h      int
		}{
			{map[string]any{"url": cam.URL + "/api/camera_proxy/camera.door"}, 320, 240}, // with the host's header
			{map[string]any{"path": filepath.Join(dir, "snap.png")}, 64, 48},
		} {
			data := h.ok(h.request("send_media", map[string]any{"to": to, "data": base64.StdEncoding.EncodeToString(pdf), "filename": "report.pdf", "thumbnail": tc.thumbnail}))
			c := h.mediaEvent(t, room, data)
			check(t, c, pdf, event.MsgFile, "application/pdf")
			if ti := c.Info.ThumbnailInfo; c.Info.ThumbnailURL == "" || ti == nil || ti.Width != tc.w || ti.Height != tc.h || c.Info.AnoaBlurhash == "" {
				t.Fatalf("thumbnail of %v: %+v %+v", tc.thumbnail, c.Info, ti)
			}
			thumb, _, err := image.DecodeConfig(bytes.NewReader(h.alice.download(t, c.Info.ThumbnailURL)))
			if err != nil || thumb.Width != tc.w || thumb.Height != tc.h {
				t.Fatalf("thumbnail of %v decodes to %+v, %v", tc.thumbnail, thumb, err)
			}
		}
	})
	// One upload per file, two for a file with a thumbnail; none for the mxc sent again to an
	// unencrypted room.
	if n := uploadsBy(t, h.bot.id()); n != 11 {
		t.Fatalf("the bot uploaded %d files, want 11", n)
	}
}

// TestSendMediaRefusals: bad sources are answered with a clear error before anything is
// uploaded.
func TestSendMediaRefusals(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret.txt"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret.txt"), filepath.Join(dir, "link.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty.txt"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	allowed := mediaServer(t, map[string][]byte{"/slow": []byte("late"), "/notes.txt": []byte("not a picture")}, "")
	other := mediaServer(t, map[string][]byte{"/x.png": []byte("x")}, "")
	allowedHost := strings.TrimPrefix(allowed.URL, "http://")
	h := newHarness(t, map[string]string{
		"MEDIA_DIRS": dir, "MEDIA_HOSTS": allowedHost, "MEDIA_MAX_BYTES": "2048", "MEDIA_FETCH_TIMEOUT": "1s",
	})
	room := h.sharedRoom(nil)
	to := room.String()
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	for _, tc := range []struct {
		name   string
		fields map[string]any
		code   string
		says   string
	}{
		{"path outside", map[string]any{"path": filepath.Join(outside, "secret.txt")}, "not_allowed", "not under MEDIA_DIRS"},
		{"symlink escaping", map[string]any{"path": filepath.Join(dir, "link.txt")}, "not_allowed", "not under MEDIA_DIRS"},
		{"dot dot", map[string]any{"path": dir + "/../" + filepath.Base(outside) + "/secret.txt"}, "not_allowed", "not under MEDIA_DIRS"},
		{"empty file", map[string]any{"path": filepath.Join(dir, "empty.txt")}, "invalid_request", "empty"},
		{"host not allowed", map[string]any{"url": other.URL + "/x.png"}, "not_allowed", "MEDIA_HOSTS"},
		{"redirect to a host not allowed", map[string]any{"url": allowed.URL + "/redirect?to=" + url.QueryEscape(other.URL+"/x.png")}, "not_allowed", "MEDIA_HOSTS"},
		{"url times out", map[string]any{"url": allowed.URL + "/slow"}, "timeout", "MEDIA_FETCH_TIMEOUT"},
		{"data over the limit", map[string]any{"data": b64(make([]byte, 4096))}, "too_large", "MEDIA_MAX_BYTES"},
		{"broken base64", map[string]any{"data": "not base64!"}, "invalid_request", "base64"},
		{"unknown kind", map[string]any{"data": b64([]byte("hi")), "kind": "hologram"}, "invalid_request", "kind"},
		{"two sources", map[string]any{"data": b64([]byte("hi")), "path": filepath.Join(dir, "empty.txt")}, "invalid_request", "exactly one"},
		{"typo", map[string]any{"data": b64([]byte("hi")), "captoin": "x"}, "invalid_request", "captoin"},
		{"thumbnail not a picture", map[string]any{"data": b64([]byte("hi")), "thumbnail": map[string]any{"data": b64([]byte("not a picture"))}}, "invalid_request", "'thumbnail' must be a PNG, JPEG"},
		{"thumbnail path outside", map[string]any{"data": b64([]byte("hi")), "thumbnail": map[string]any{"path": filepath.Join(outside, "secret.txt")}}, "not_allowed", "field 'thumbnail.path'"},
		{"thumbnail host not allowed", map[string]any{"data": b64([]byte("hi")), "thumbnail": map[string]any{"url": other.URL + "/x.png"}}, "not_allowed", "field 'thumbnail.url'"},
		{"thumbnail of two sources", map[string]any{"data": b64([]byte("hi")), "thumbnail": map[string]any{"data": b64([]byte("x")), "url": allowed.URL + "/x"}}, "invalid_request", "exactly one"},
		{"thumbnail typo", map[string]any{"data": b64([]byte("hi")), "thumbnail": map[string]any{"dat": b64([]byte("x"))}}, "invalid_request", "dat"},
		{"thumbnail in other letter case", map[string]any{"data": b64([]byte("hi")), "thumbnail": map[string]any{"URL": allowed.URL + "/x"}}, "invalid_request", "field 'thumbnail.URL' is not known"},
		{"thumbnail path of an empty file", map[string]any{"data": b64([]byte("hi")), "thumbnail": map[string]any{"path": filepath.Join(dir, "empty.txt")}}, "invalid_request", "empty"},
		{"thumbnail url not a picture", map[string]any{"data": b64([]byte("hi")), "thumbnail": map[string]any{"url": allowed.URL + "/notes.txt"}}, "invalid_request", "'thumbnail' must be a PNG, JPEG"},
		{"thumbnail url times out", map[string]any{"data": b64([]byte("hi")), "thumbnail": map[string]any{"url": allowed.URL + "/slow"}}, "timeout", "field 'thumbnail.url'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.fields["to"] = to
			msg := h.fail(h.request("send_media", tc.fields), tc.code)
			if !strings.Contains(msg, tc.says) {
				t.Fatalf("message %q does not say %q", msg, tc.says)
			}
		})
	}
	t.Run("shortcut over the limit", func(t *testing.T) {
		h.rec.publish(h.base+"/send_media/"+to, 1, string(make([]byte, 4096)))
		resp := h.rec.wait(30*time.Second, "shortcut response", func(m message) bool {
			return m.Topic == h.base+"/bridge/response/send_media" && strings.Contains(string(m.Payload), "too_large")
		}).json(t)
		h.fail(resp, "too_large")
	})
	// Nothing was uploaded and nothing is left in the spool.
	if left, _ := filepath.Glob(filepath.Join(h.env["DATA_DIR"], "spool", "*")); len(left) != 0 {
		t.Fatalf("spool holds %v", left)
	}
	if n := uploadsBy(t, h.bot.id()); n != 0 {
		t.Fatalf("the bot uploaded %d files", n)
	}
}

// TestSendMediaEncrypted: in an encrypted room the js client (Element's crypto) gets the file
// as `file` without `url`, downloads and decrypts it to the input's SHA-256, and decrypts the
// separately encrypted thumbnail to a smaller image.
func TestSendMediaEncrypted(t *testing.T) {
	s := newE2EESetup(t)
	h, alice, room := s.h, s.alice, s.room.String()
	ctx := jsCtx(t)
	big := testPNG(t, 1200, 900)
	data := h.ok(h.request("send_media", map[string]any{"to": room, "data": base64.StdEncoding.EncodeToString(big), "caption": "camera"}))
	evt := alice.wait(t, jsclient.EventFilter{RoomID: room, EventID: data["event_id"].(string)})
	c := evt.Content
	if !evt.Encrypted || c["msgtype"] != "m.image" || c["body"] != "camera" || c["filename"] != "image.png" {
		t.Fatalf("event = %+v", evt)
	}
	if _, ok := c["url"]; ok {
		t.Fatalf("encrypted room, but the event has a url: %v", c)
	}
	file, _ := c["file"].(map[string]any)
	key, _ := file["key"].(map[string]any)
	if file == nil || file["v"] != "v2" || key["kty"] != "oct" || key["alg"] != "A256CTR" || key["ext"] != true ||
		fmt.Sprint(key["key_ops"]) != "[encrypt decrypt]" || file["iv"] == "" || file["hashes"].(map[string]any)["sha256"] == "" {
		t.Fatalf("file = %v", file)
	}
	got, err := alice.DownloadAttachment(ctx, "", file)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%x", sha256.Sum256(big)); got.SHA256 != want {
		t.Fatalf("decrypted sha256 %s, want %s", got.SHA256, want)
	}
	info, _ := c["info"].(map[string]any)
	if info["w"] != float64(1200) || info["h"] != float64(900) || info["size"] != float64(len(big)) || info["mimetype"] != "image/png" {
		t.Fatalf("info = %v", info)
	}
	if _, ok := info["thumbnail_url"]; ok {
		t.Fatalf("encrypted room, but the thumbnail has a url: %v", info)
	}
	thumbFile, _ := info["thumbnail_file"].(map[string]any)
	if thumbFile == nil || thumbFile["url"] == file["url"] {
		t.Fatalf("thumbnail_file = %v", thumbFile)
	}
	thumb, err := alice.DownloadAttachment(ctx, "", thumbFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(thumb.Data))
	if err != nil || cfg.Width != 800 || cfg.Height != 600 {
		t.Fatalf("thumbnail decrypts to %+v, %v", cfg, err)
	}
}

// TestInboundMediaDownloaded: with MEDIA_DOWNLOAD_DIR, an encrypted image from the js client
// and a plain file from alice's mautrix client are published once each, with media.path naming
// the decrypted file (0600) that has the sent bytes.
func TestInboundMediaDownloaded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "downloads")
	s := newE2EESetupWith(t, map[string]string{"MEDIA_DOWNLOAD_DIR": dir})
	h, alice, room := s.h, s.alice, s.room.String()
	ctx := jsCtx(t)

	checkFile := func(t *testing.T, msg map[string]any, evtID string, want []byte, ext string) {
		t.Helper()
		m, _ := msg["media"].(map[string]any)
		path, _ := m["path"].(string)
		if filepath.Dir(path) != dir || filepath.Ext(path) != ext || !strings.Contains(path, strings.TrimPrefix(evtID, "$")[:8]) {
			t.Fatalf("media = %v", m)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(got) != sha256.Sum256(want) {
			t.Fatalf("%s holds %d bytes, not the %d sent", path, len(got), len(want))
		}
		if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
			t.Fatalf("%s has mode %v", path, st.Mode())
		}
	}
	published := func(evtID string) int {
		n := 0
		for _, m := range h.rec.all(h.base + "/room/" + room + "/message") {
			if strings.Contains(string(m.Payload), evtID) {
				n++
			}
		}
		return n
	}

	downloaded := 0
	t.Run("encrypted from js", func(t *testing.T) {
		pic := testPNG(t, 300, 200)
		downloaded += len(pic)
		file, err := alice.UploadAttachment(ctx, pic)
		if err != nil {
			t.Fatal(err)
		}
		evtID, err := alice.Send(ctx, jsclient.SendArgs{RoomID: room, Type: "m.room.message", Content: map[string]any{
			"msgtype": "m.image", "body": "garden.png", "file": file,
			"info": map[string]any{"mimetype": "image/png", "size": len(pic), "w": 300, "h": 200},
		}})
		if err != nil {
			t.Fatal(err)
		}
		msg := s.inbound(t, "message", evtID)
		if m, _ := msg["media"].(map[string]any); m["encrypted"] != true || msg["encrypted"] != true {
			t.Fatalf("message = %v", msg)
		}
		checkFile(t, msg, evtID, pic, ".png")
		time.Sleep(500 * time.Millisecond)
		if n := published(evtID); n != 1 {
			t.Fatalf("published %d times", n)
		}
	})
	t.Run("plain file from mautrix", func(t *testing.T) {
		plainRoom := h.sharedRoom(nil)
		report := []byte("%PDF-1.4 inbound report")
		downloaded += len(report)
		up, err := h.alice.cli.UploadBytesWithName(context.Background(), report, "application/pdf", "report.pdf")
		if err != nil {
			t.Fatal(err)
		}
		evtID := h.alice.send(t, plainRoom, &event.MessageEventContent{MsgType: event.MsgFile, Body: "report.pdf",
			URL: up.ContentURI.CUString(), Info: &event.FileInfo{MimeType: "application/pdf", Size: len(report)}})
		msg := h.rec.wait(30*time.Second, "file message", func(m message) bool {
			return strings.HasSuffix(m.Topic, "/message") && strings.Contains(string(m.Payload), evtID.String())
		}).json(t)
		checkFile(t, msg, evtID.String(), report, ".pdf")
	})
	_, metrics := get(t, s.metricsURL, "")
	if got := sample(metrics, `matrix2mqtt_media_bytes_total{direction="download"}`); got != float64(downloaded) {
		t.Errorf("media bytes downloaded = %v, want %d", got, downloaded)
	}
	if got := sample(metrics, `matrix2mqtt_media_bytes_total{direction="upload"}`); got != 0 {
		t.Errorf("media bytes uploaded = %v, want 0", got)
	}
}

// gateProxy passes requests to the homeserver, except that while hold is set, requests whose
// method and path match it hang (unforwarded) until the client goes away; held is signalled
// for each.
type gateProxy struct {
	*httptest.Server
	mu      sync.Mutex
	hold    func(r *http.Request) bool
	held    chan struct{}
	release chan struct{} // closed at the end: held requests fail with 502
}

func newGateProxy(t *testing.T) *gateProxy {
	t.Helper()
	target, _ := url.Parse(env.HomeserverURL)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1
	g := &gateProxy{held: make(chan struct{}, 16), release: make(chan struct{})}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		hold := g.hold != nil && g.hold(r)
		g.mu.Unlock()
		if hold {
			select {
			case g.held <- struct{}{}:
			default:
			}
			select {
			case <-r.Context().Done():
			case <-g.release:
				w.WriteHeader(http.StatusBadGateway)
			}
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(g.Close)
	t.Cleanup(func() { close(g.release) })
	return g
}

func (g *gateProxy) setHold(fn func(r *http.Request) bool) {
	g.mu.Lock()
	g.hold = fn
	g.mu.Unlock()
}

func (g *gateProxy) waitHeld(t *testing.T) {
	t.Helper()
	select {
	case <-g.held:
	case <-time.After(30 * time.Second):
		t.Fatal("no request was held")
	}
}

// waitImages waits until alice sees want images of the bot in room: Dendrite's /messages may
// show an event a moment after its send was answered.
func (h *harness) waitImages(t *testing.T, room id.RoomID, want int) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		if n := h.alice.roomImages(t, room, h.bot.id()); n != want {
			return fmt.Errorf("room %s has %d images of the bot, want %d", room, n, want)
		}
		return nil
	})
}

// roomImages counts the m.image events of sender in room, from alice's view of the timeline.
func (u *user) roomImages(t *testing.T, room id.RoomID, sender id.UserID) int {
	t.Helper()
	resp, err := u.cli.Messages(context.Background(), room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, evt := range resp.Chunk {
		_ = evt.Content.ParseRaw(evt.Type)
		if evt.Sender == sender && evt.Type == event.EventMessage && evt.Content.AsMessage().MsgType == event.MsgImage {
			n++
		}
	}
	return n
}

// TestSendMediaCrashBetweenUploadAndSend: the bridge is killed (SIGKILL) after the upload, while
// its send hangs; after the restart it sends the saved event with the same transaction ID
// without uploading again, and answers ok. One image, one upload.
func TestSendMediaCrashBetweenUploadAndSend(t *testing.T) {
	proxy := newGateProxy(t)
	h := newHarness(t, map[string]string{"MATRIX_HOMESERVER": proxy.URL})
	room := h.sharedRoom(nil)
	h.stop()
	h.startProcess()
	proxy.setHold(func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/send/m.room.message/")
	})
	pic := testPNG(t, 64, 64)
	reqID := fmt.Sprintf("crash-%d", time.Now().UnixNano())
	payload, _ := json.Marshal(map[string]any{"id": reqID, "to": room.String(), "data": base64.StdEncoding.EncodeToString(pic)})
	h.rec.publish(h.base+"/bridge/request/send_media", 1, string(payload))
	proxy.waitHeld(t)
	if n := uploadsBy(t, h.bot.id()); n != 1 {
		t.Fatalf("uploads before the crash = %d", n)
	}
	h.kill()
	proxy.setHold(nil)
	h.startProcess()
	c := h.mediaEvent(t, room, h.ok(h.response("send_media", reqID)))
	if !bytes.Equal(h.alice.download(t, c.URL), pic) {
		t.Fatal("the image has other bytes")
	}
	if n := uploadsBy(t, h.bot.id()); n != 1 {
		t.Fatalf("uploads = %d, want 1", n)
	}
	h.waitImages(t, room, 1)
	if left, _ := filepath.Glob(filepath.Join(h.env["DATA_DIR"], "spool", "*")); len(left) != 0 {
		t.Fatalf("spool holds %v", left)
	}
}

// TestInboundMediaRestartDuringDownload: while an inbound file downloads, another room's message
// is published; the bridge is killed during the download, and after the restart the message is
// published once, with its file.
func TestInboundMediaRestartDuringDownload(t *testing.T) {
	proxy := newGateProxy(t)
	dir := filepath.Join(t.TempDir(), "downloads")
	h := newHarness(t, map[string]string{"MATRIX_HOMESERVER": proxy.URL, "MEDIA_DOWNLOAD_DIR": dir})
	room, other := h.sharedRoom(nil), h.sharedRoom(nil)
	h.stop()
	h.startProcess()
	proxy.setHold(func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/media/download/") })
	pic := testPNG(t, 50, 40)
	up, err := h.alice.cli.UploadBytesWithName(context.Background(), pic, "image/png", "cat.png")
	if err != nil {
		t.Fatal(err)
	}
	evtID := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgImage, Body: "cat.png",
		URL: up.ContentURI.CUString(), Info: &event.FileInfo{MimeType: "image/png", Size: len(pic)}})
	proxy.waitHeld(t)
	topic := h.base + "/room/" + room.String() + "/message"
	published := func() []message {
		var out []message
		for _, m := range h.rec.all(topic) {
			if strings.Contains(string(m.Payload), evtID.String()) {
				out = append(out, m)
			}
		}
		return out
	}
	if n := len(published()); n != 0 {
		t.Fatalf("published %d times before its file was there", n)
	}
	// The download holds neither the sync nor other rooms.
	h.alice.send(t, other, &event.MessageEventContent{MsgType: event.MsgText, Body: "while the cat downloads"})
	h.rec.wait(20*time.Second, "a message of another room during the download", func(m message) bool {
		return m.Topic == h.base+"/room/"+other.String()+"/message" && strings.Contains(string(m.Payload), "while the cat downloads")
	})
	h.kill()
	proxy.setHold(nil)
	h.startProcess()
	msg := h.rec.wait(60*time.Second, "message with its file", func(m message) bool {
		return m.Topic == topic && strings.Contains(string(m.Payload), evtID.String())
	}).json(t)
	path, _ := msg["media"].(map[string]any)["path"].(string)
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, pic) {
		t.Fatalf("file %q: %v", path, err)
	}
	time.Sleep(2 * time.Second)
	if n := len(published()); n != 1 {
		t.Fatalf("published %d times", n)
	}
}

// testVideo makes a 2 s 320×240 MP4.
func testVideo(t *testing.T) []byte {
	t.Helper()
	data, err := testenv.Video(t.TempDir(), 320, 240, 2)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// jsonInts reads the numbers of an event's JSON as Element X does: each must be an integer.
func jsonInts(t *testing.T, raw []byte, path ...string) []int64 {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		t.Fatal(err)
	}
	for _, key := range path[:len(path)-1] {
		obj, _ = obj[key].(map[string]any)
	}
	var out []int64
	for _, key := range strings.Split(path[len(path)-1], ",") {
		n, ok := obj[key].(json.Number)
		v, err := n.Int64()
		if !ok || err != nil {
			t.Fatalf("%s.%s = %v: not a JSON integer (%s)", strings.Join(path[:len(path)-1], "."), key, obj[key], raw)
		}
		out = append(out, v)
	}
	return out
}

// TestSendMediaVideo: with ffprobe and ffmpeg on PATH a video gets its dimensions, duration and a
// thumbnail of a frame, as JSON integers, in a plain and in an encrypted room; the request's
// width, height and duration_ms win over what the file says.
func TestSendMediaVideo(t *testing.T) {
	clip := testVideo(t)
	s := newE2EESetup(t)
	h := s.h
	plain := h.sharedRoom(nil)
	b64 := base64.StdEncoding.EncodeToString(clip)

	t.Run("plain room", func(t *testing.T) {
		data := h.ok(h.request("send_media", map[string]any{"to": plain.String(), "data": b64, "caption": "driveway"}))
		evt := h.alice.event(t, plain, id.EventID(data["event_id"].(string)))
		c := evt.Content.AsMessage()
		if c.MsgType != event.MsgVideo || c.Body != "driveway" || c.FileName != "video.mp4" || c.Info.MimeType != "video/mp4" || c.Info.Size != len(clip) {
			t.Fatalf("content = %+v info %+v", c, c.Info)
		}
		got := jsonInts(t, evt.Content.VeryRaw, "info", "w,h,duration,size")
		if got[0] != 320 || got[1] != 240 || got[2] < 1900 || got[2] > 2100 {
			t.Fatalf("info w, h, duration = %v", got)
		}
		thumb := jsonInts(t, evt.Content.VeryRaw, "info", "thumbnail_info", "w,h,size")
		if c.Info.ThumbnailURL == "" || c.Info.ThumbnailInfo.MimeType != "image/jpeg" || thumb[0] != 320 || thumb[1] != 240 || c.Info.AnoaBlurhash == "" {
			t.Fatalf("thumbnail: %+v %+v", c.Info, c.Info.ThumbnailInfo)
		}
		cfg, _, err := image.DecodeConfig(bytes.NewReader(h.alice.download(t, c.Info.ThumbnailURL)))
		if err != nil || cfg.Width != 320 || cfg.Height != 240 {
			t.Fatalf("thumbnail decodes to %+v, %v", cfg, err)
		}
	})
	t.Run("given in the request", func(t *testing.T) {
		data := h.ok(h.request("send_media", map[string]any{"to": plain.String(), "data": b64, "width": 640, "height": 480, "duration_ms": 5000}))
		evt := h.alice.event(t, plain, id.EventID(data["event_id"].(string)))
		if got := jsonInts(t, evt.Content.VeryRaw, "info", "w,h,duration"); fmt.Sprint(got) != "[640 480 5000]" {
			t.Fatalf("info w, h, duration = %v", got)
		}
	})
	t.Run("encrypted room", func(t *testing.T) {
		data := h.ok(h.request("send_media", map[string]any{"to": s.room.String(), "data": b64}))
		evt := s.alice.wait(t, jsclient.EventFilter{RoomID: s.room.String(), EventID: data["event_id"].(string)})
		info, _ := evt.Content["info"].(map[string]any)
		if !evt.Encrypted || evt.Content["msgtype"] != "m.video" || info["w"] != float64(320) || info["h"] != float64(240) || info["mimetype"] != "video/mp4" {
			t.Fatalf("event = %+v", evt)
		}
		if d, _ := info["duration"].(float64); d < 1900 || d > 2100 || d != float64(int(d)) {
			t.Fatalf("duration = %v", info["duration"])
		}
		if _, ok := info["thumbnail_url"]; ok || info["thumbnail_file"] == nil {
			t.Fatalf("encrypted room: want thumbnail_file and no thumbnail_url, got %v", info)
		}
		thumb, err := s.alice.DownloadAttachment(jsCtx(t), "", info["thumbnail_file"].(map[string]any))
		if err != nil {
			t.Fatal(err)
		}
		if cfg, _, err := image.DecodeConfig(bytes.NewReader(thumb.Data)); err != nil || cfg.Width != 320 {
			t.Fatalf("thumbnail decrypts to %+v, %v", cfg, err)
		}
	})
	t.Run("thumbnail given", func(t *testing.T) {
		snap := base64.StdEncoding.EncodeToString(testPNG(t, 200, 100))
		data := h.ok(h.request("send_media", map[string]any{"to": plain.String(), "data": b64, "thumbnail": map[string]any{"data": snap}}))
		c := h.alice.event(t, plain, id.EventID(data["event_id"].(string))).Content.AsMessage()
		cfg, _, err := image.DecodeConfig(bytes.NewReader(h.alice.download(t, c.Info.ThumbnailURL)))
		if c.Info.Width != 320 || c.Info.ThumbnailInfo == nil || c.Info.ThumbnailInfo.Width != 200 || err != nil || cfg.Width != 200 || cfg.Height != 100 {
			t.Fatalf("plain room: info %+v, thumbnail %+v decodes to %+v, %v", c.Info, c.Info.ThumbnailInfo, cfg, err)
		}
		data = h.ok(h.request("send_media", map[string]any{"to": s.room.String(), "data": b64, "thumbnail": map[string]any{"data": snap}}))
		evt := s.alice.wait(t, jsclient.EventFilter{RoomID: s.room.String(), EventID: data["event_id"].(string)})
		info, _ := evt.Content["info"].(map[string]any)
		tf, _ := info["thumbnail_file"].(map[string]any)
		if tf == nil {
			t.Fatalf("encrypted room: no thumbnail_file in %v", info)
		}
		thumb, err := s.alice.DownloadAttachment(jsCtx(t), "", tf)
		if err != nil {
			t.Fatal(err)
		}
		if cfg, _, err := image.DecodeConfig(bytes.NewReader(thumb.Data)); err != nil || cfg.Width != 200 || cfg.Height != 100 {
			t.Fatalf("encrypted room: thumbnail decrypts to %+v, %v", cfg, err)
		}
	})
	// Five videos and their thumbnails went up; nothing came down.
	_, metrics := get(t, s.metricsURL, "")
	if got := sample(metrics, `matrix2mqtt_media_bytes_total{direction="upload"}`); got <= float64(5*len(clip)) {
		t.Errorf("media bytes uploaded = %v, want more than the five videos' %d", got, 5*len(clip))
	}
	if got := sample(metrics, `matrix2mqtt_media_bytes_total{direction="download"}`); got != 0 {
		t.Errorf("media bytes downloaded = %v, want 0", got)
	}
}

// TestSendMediaCaptionAndRelations: an HTML caption, a reply, a thread (and a reply in it) as
// alice's client sees them; and a file whose request is larger than MAX_PAYLOAD_BYTES, which
// only MEDIA_MAX_BYTES bounds.
func TestSendMediaCaptionAndRelations(t *testing.T) {
	h := newHarness(t, map[string]string{"MAX_PAYLOAD_BYTES": "65536"})
	room := h.sharedRoom(nil)
	to := room.String()
	small := base64.StdEncoding.EncodeToString(testPNG(t, 32, 24))
	root := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "doorbell thread"})
	relates := func(t *testing.T, data map[string]any) map[string]any {
		t.Helper()
		raw := h.alice.event(t, room, id.EventID(data["event_id"].(string))).Content.Raw
		rel, _ := raw["m.relates_to"].(map[string]any)
		if rel == nil {
			t.Fatalf("no m.relates_to: %v", raw)
		}
		return rel
	}

	t.Run("caption_html", func(t *testing.T) {
		data := h.ok(h.request("send_media", map[string]any{"to": to, "data": small, "caption_html": "<b>Motion</b> at the door"}))
		c := h.mediaEvent(t, room, data)
		if c.Format != event.FormatHTML || c.FormattedBody != "<b>Motion</b> at the door" || c.Body != "**Motion** at the door" || c.FileName != "image.png" {
			t.Fatalf("content = %+v", c)
		}
	})
	t.Run("reply_to", func(t *testing.T) {
		rel := relates(t, h.ok(h.request("send_media", map[string]any{"to": to, "data": small, "reply_to": root.String()})))
		reply, _ := rel["m.in_reply_to"].(map[string]any)
		if reply["event_id"] != root.String() || rel["rel_type"] != nil {
			t.Fatalf("m.relates_to = %v", rel)
		}
	})
	t.Run("thread", func(t *testing.T) {
		rel := relates(t, h.ok(h.request("send_media", map[string]any{"to": to, "data": small, "thread": root.String()})))
		if rel["rel_type"] != "m.thread" || rel["event_id"] != root.String() || rel["is_falling_back"] != true {
			t.Fatalf("m.relates_to = %v", rel)
		}
	})
	t.Run("reply in a thread", func(t *testing.T) {
		inThread := h.alice.send(t, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "in the thread",
			RelatesTo: (&event.RelatesTo{}).SetThread(root, root)})
		rel := relates(t, h.ok(h.request("send_media", map[string]any{"to": to, "data": small, "thread": root.String(), "reply_to": inThread.String()})))
		reply, _ := rel["m.in_reply_to"].(map[string]any)
		if rel["rel_type"] != "m.thread" || rel["event_id"] != root.String() || reply["event_id"] != inThread.String() || rel["is_falling_back"] == true {
			t.Fatalf("m.relates_to = %v", rel)
		}
	})
	t.Run("data beyond MAX_PAYLOAD_BYTES", func(t *testing.T) {
		file := make([]byte, 200<<10)
		if _, err := rand.Read(file); err != nil {
			t.Fatal(err)
		}
		fields := map[string]any{"to": to, "data": base64.StdEncoding.EncodeToString(file), "filename": "noise.bin"}
		if payload, _ := json.Marshal(fields); len(payload) <= 65536 {
			t.Fatalf("the request is only %d bytes", len(payload))
		}
		c := h.mediaEvent(t, room, h.ok(h.request("send_media", fields)))
		if c.MsgType != event.MsgFile || c.Info.Size != len(file) || c.FileName != "noise.bin" {
			t.Fatalf("content = %+v info %+v", c, c.Info)
		}
		if got := h.alice.download(t, c.URL); !bytes.Equal(got, file) {
			t.Fatalf("downloaded %d bytes that differ from the %d sent", len(got), len(file))
		}
	})
}

// TestSendMediaRoomsDoNotWaitForEachOther: while the upload of one room's file hangs, a file for
// another room is uploaded and sent.
func TestSendMediaRoomsDoNotWaitForEachOther(t *testing.T) {
	proxy := newGateProxy(t)
	h := newHarness(t, map[string]string{"MATRIX_HOMESERVER": proxy.URL, "E2EE": "false"})
	slow, fast := h.sharedRoom(nil), h.sharedRoom(nil)
	var holding atomic.Bool
	proxy.setHold(func(r *http.Request) bool { // the first upload only
		return r.Method == http.MethodPost && strings.Contains(r.URL.Path, "/upload") && holding.CompareAndSwap(false, true)
	})
	pic := base64.StdEncoding.EncodeToString(testPNG(t, 32, 32))
	payload, _ := json.Marshal(map[string]any{"id": "slow-upload", "to": slow.String(), "data": pic})
	h.rec.publish(h.base+"/bridge/request/send_media", 1, string(payload))
	proxy.waitHeld(t)
	c := h.mediaEvent(t, fast, h.ok(h.request("send_media", map[string]any{"to": fast.String(), "data": pic})))
	if c.MsgType != event.MsgImage {
		t.Fatalf("the other room got %s", c.MsgType)
	}
	for _, m := range h.rec.all(h.base + "/bridge/response/send_media") {
		if strings.Contains(string(m.Payload), "slow-upload") {
			t.Fatalf("the held upload was answered: %s", m.Payload)
		}
	}
}
