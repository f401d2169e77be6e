package rooms_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
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

func pngBytes(t testing.TB) []byte {
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewRGBA(image.Rect(0, 0, 4, 4))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestSetRoomAvatarSources: set_room's avatar takes an mxc:// URI or a send_media source,
// within the media allowlists and only for images; a refused avatar uploads and sets nothing.
func TestSetRoomAvatarSources(t *testing.T) {
	const bot = id.UserID("@bot:hs")
	img := pngBytes(t)
	allowed, outside := t.TempDir(), t.TempDir()
	for dir, name := range map[string]string{allowed: "a.png", outside: "b.png"} {
		if err := os.WriteFile(filepath.Join(dir, name), img, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(allowed, "notes.txt"), []byte("just text"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := media.New(media.Config{Dirs: []string{allowed}, Hosts: []string{"media.example"}, MaxBytes: 1 << 20}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := base64.StdEncoding.EncodeToString(img)
	tests := []struct {
		name     string
		avatar   string
		parseErr string // refused by Validate
		code     string // refused by Run
		mention  string
		uploads  int
	}{
		{"mxc", `"mxc://hs/abc"`, "", "", "", 0},
		{"remove", `""`, "", "", "", 0},
		{"data", fmt.Sprintf(`{"data":%q}`, data), "", "", "", 1},
		{"path", fmt.Sprintf(`{"path":%q}`, filepath.Join(allowed, "a.png")), "", "", "", 1},
		{"not an mxc", `"https://example.org/a.png"`, wire.CodeInvalidRequest, "", "mxc://", 0},
		{"two sources", fmt.Sprintf(`{"data":%q,"url":"https://media.example/a.png"}`, data), wire.CodeInvalidRequest, "", "exactly one", 0},
		{"no source", `{}`, wire.CodeInvalidRequest, "", "exactly one", 0},
		{"unknown field", `{"mxc":"mxc://hs/abc"}`, wire.CodeInvalidRequest, "", "exactly one", 0},
		{"letter case", `{"URL":"https://media.example/a.png"}`, wire.CodeInvalidRequest, "", "exactly one", 0},
		{"a source twice", fmt.Sprintf(`{"data":%q,"data":%q}`, data, data), wire.CodeInvalidRequest, "", "exactly one", 0},
		{"a number", `5`, wire.CodeInvalidRequest, "", "mxc:// URI or an object", 0},
		{"bad base64", `{"data":"***"}`, wire.CodeInvalidRequest, "", "not base64", 0},
		{"path outside MEDIA_DIRS", fmt.Sprintf(`{"path":%q}`, filepath.Join(outside, "b.png")), "", wire.CodeNotAllowed, "avatar.path", 0},
		{"host not allowed", `{"url":"https://elsewhere.example/a.png"}`, "", wire.CodeNotAllowed, "MEDIA_HOSTS", 0},
		{"not an image", fmt.Sprintf(`{"path":%q}`, filepath.Join(allowed, "notes.txt")), "", wire.CodeInvalidRequest, "must be an image", 0},
		{"empty data", `{"data":"AA=="}`, "", wire.CodeInvalidRequest, "must be an image", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hs := &actionstest.Matrix{Admin: actionstest.Admin{Bot: bot, Power: map[id.RoomID]*event.PowerLevelsEventContent{
				"!r:hs": {Users: map[id.UserID]int{bot: 100}},
			}}}
			tg := targets.New(targets.Config{})
			req, werr := catalog.Default().Parse("set_room", "", []byte(`{"room":"!r:hs","avatar":`+tc.avatar+`}`), tg)
			if tc.parseErr != "" {
				if werr == nil || werr.Code != tc.parseErr || !strings.Contains(werr.Message, tc.mention) {
					t.Fatalf("parse error = %v, want %s mentioning %q", werr, tc.parseErr, tc.mention)
				}
				return
			}
			if werr != nil {
				t.Fatal(werr)
			}
			_, err := req.(actions.Immediate).Run(context.Background(), &actions.Env{Matrix: hs, Targets: tg, Media: m})
			if len(hs.Uploads) != tc.uploads {
				t.Fatalf("uploads = %d, want %d", len(hs.Uploads), tc.uploads)
			}
			if tc.code == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if tc.uploads == 1 && !bytes.Equal(hs.Uploads[0], img) {
					t.Fatal("uploaded other bytes than the image")
				}
				if len(hs.Admin.Changes) != 1 || hs.Admin.Changes[0] != "state m.room.avatar" {
					t.Fatalf("changes = %v", hs.Admin.Changes)
				}
				return
			}
			out := actions.Classify(err)
			if out.Err.Code != tc.code || !strings.Contains(out.Err.Message, tc.mention) {
				t.Fatalf("error = %v, want %s mentioning %q", out.Err, tc.code, tc.mention)
			}
			if len(hs.Admin.Changes) != 0 {
				t.Fatalf("changed %v despite the refusal", hs.Admin.Changes)
			}
		})
	}
}

// FuzzAvatar: any JSON value as an avatar is parsed and checked without panicking.
func FuzzAvatar(f *testing.F) {
	for _, s := range []string{`"mxc://hs/a"`, `""`, `{"data":"iVBORw0KGgo="}`, `{"path":"/a","url":"b"}`, `[1]`, `null`, `{"data":5}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, avatar string) {
		var r rooms.SetRoom
		if wire.Decode([]byte(`{"room":"!r:hs","avatar":`+avatar+`}`), &r) == nil && r.Avatar != nil {
			_ = r.Avatar.Check()
		}
	})
}
