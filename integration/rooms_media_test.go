package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix2mqtt/matrix2mqtt/internal/jsclient"
)

// roomAvatar reads a room's avatar as u sees it and downloads it.
func roomAvatar(t *testing.T, u *user, room id.RoomID) []byte {
	t.Helper()
	var content event.RoomAvatarEventContent
	if err := u.cli.StateEvent(context.Background(), room, event.StateRoomAvatar, "", &content); err != nil {
		t.Fatalf("failed to read the avatar of %s: %v", room, err)
	}
	return u.download(t, content.URL)
}

// TestRoomAvatarFromMedia: set_room takes an avatar from data and from a url of MEDIA_HOSTS,
// create_room from data; alice downloads the m.room.avatar of each to the same bytes. A path
// outside MEDIA_DIRS, a host outside MEDIA_HOSTS and a non-image are refused with a clear
// error and upload nothing.
func TestRoomAvatarFromMedia(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	first, second, third := testPNG(t, 32, 32), testPNG(t, 40, 30), testPNG(t, 24, 24)
	if err := os.WriteFile(filepath.Join(outside, "a.png"), first, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a picture at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := mediaServer(t, map[string][]byte{"/avatar.png": second}, "")
	other := mediaServer(t, map[string][]byte{"/avatar.png": second}, "")
	h := newHarness(t, map[string]string{"E2EE": "false", "MEDIA_DIRS": dir, "MEDIA_HOSTS": strings.TrimPrefix(srv.URL, "http://")})
	room := h.sharedRoom(&mautrix.ReqCreateRoom{Preset: "private_chat", PowerLevelOverride: &event.PowerLevelsEventContent{
		Users: map[id.UserID]int{h.alice.id(): 100, h.bot.id(): 100},
	}})
	r := room.String()
	b64 := base64.StdEncoding.EncodeToString

	t.Run("refusals upload nothing", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			avatar map[string]any
			code   string
			says   string
		}{
			{"path outside MEDIA_DIRS", map[string]any{"path": filepath.Join(outside, "a.png")}, "not_allowed", "not under MEDIA_DIRS"},
			{"host not allowed", map[string]any{"url": other.URL + "/avatar.png"}, "not_allowed", "MEDIA_HOSTS"},
			{"not an image", map[string]any{"path": filepath.Join(dir, "notes.txt")}, "invalid_request", "must be an image"},
			{"two sources", map[string]any{"data": b64(first), "url": srv.URL + "/avatar.png"}, "invalid_request", "exactly one"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				msg := h.fail(h.request("set_room", map[string]any{"room": r, "avatar": tc.avatar}), tc.code)
				if !strings.Contains(msg, tc.says) {
					t.Fatalf("message %q does not say %q", msg, tc.says)
				}
			})
		}
		if n := uploadsBy(t, h.bot.id()); n != 0 {
			t.Fatalf("the bot uploaded %d files", n)
		}
	})
	t.Run("set_room from data", func(t *testing.T) {
		data := h.ok(h.request("set_room", map[string]any{"room": r, "avatar": map[string]any{"data": b64(first)}}))
		if ids, _ := data["event_ids"].(map[string]any); ids["avatar"] == nil {
			t.Fatalf("data = %v", data)
		}
		if got := roomAvatar(t, h.alice, room); !bytes.Equal(got, first) {
			t.Fatalf("alice downloads %d bytes, not the %d sent", len(got), len(first))
		}
	})
	t.Run("set_room from a url", func(t *testing.T) {
		h.ok(h.request("set_room", map[string]any{"room": r, "avatar": map[string]any{"url": srv.URL + "/avatar.png"}}))
		if got := roomAvatar(t, h.alice, room); !bytes.Equal(got, second) {
			t.Fatalf("alice downloads %d bytes, not the %d served", len(got), len(second))
		}
	})
	t.Run("create_room from data", func(t *testing.T) {
		data := h.ok(h.request("create_room", map[string]any{"name": "With a face", "invite": []string{h.alice.UserID},
			"avatar": map[string]any{"data": b64(third)}}))
		created := id.RoomID(data["room_id"].(string))
		h.alice.join(t, created)
		if got := roomAvatar(t, h.alice, created); !bytes.Equal(got, third) {
			t.Fatalf("alice downloads %d bytes, not the %d sent", len(got), len(third))
		}
	})
}

// timelineCount counts the events of type typ that sender sent to room, as u sees them.
func timelineCount(t *testing.T, u *user, room id.RoomID, sender id.UserID, typ event.Type) int {
	t.Helper()
	resp, err := u.cli.Messages(context.Background(), room, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, evt := range resp.Chunk {
		if evt.Sender == sender && evt.Type == typ {
			n++
		}
	}
	return n
}

// TestBroadcastMedia: an image broadcast to two plain rooms and one encrypted room (the js
// client's) reaches each exactly once with the sent bytes and its given thumbnail, from two
// uploads of each: in the clear for both plain rooms, encrypted for the encrypted room. A room
// avatar set in the
// encrypted room is uploaded unencrypted (public state).
func TestBroadcastMedia(t *testing.T) {
	s := newE2EESetup(t)
	h, alice := s.h, s.alice
	img := testPNG(t, 64, 48)
	plain := []id.RoomID{h.sharedRoom(nil), h.sharedRoom(nil)}
	rooms := []id.RoomID{plain[0], s.room, plain[1]}
	data := h.ok(h.request("broadcast", map[string]any{"to": roomStrings(rooms),
		"media": map[string]any{"data": base64.StdEncoding.EncodeToString(img), "caption": "the garden", "filename": "garden.png",
			"thumbnail": map[string]any{"data": base64.StdEncoding.EncodeToString(testPNG(t, 200, 100))}}}))
	if data["sent"] != 3.0 || data["failed"] != 0.0 {
		t.Fatalf("data = %v", data)
	}
	results := data["results"].([]any)
	for i, room := range rooms {
		evtID, _ := results[i].(map[string]any)["event_id"].(string)
		if room == s.room {
			evt := alice.wait(t, jsclient.EventFilter{RoomID: room.String(), EventID: evtID})
			file, _ := evt.Content["file"].(map[string]any)
			info, _ := evt.Content["info"].(map[string]any)
			if !evt.Encrypted || evt.Content["msgtype"] != "m.image" || evt.Content["body"] != "the garden" || file == nil || info["thumbnail_file"] == nil {
				t.Fatalf("encrypted room's event = %+v", evt)
			}
			got, err := alice.DownloadAttachment(jsCtx(t), "", file)
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("%x", sha256.Sum256(img)); got.SHA256 != want {
				t.Fatalf("decrypted sha256 %s, want %s", got.SHA256, want)
			}
			if n := timelineCount(t, h.alice, room, h.bot.id(), event.EventEncrypted); n != 1 {
				t.Fatalf("the encrypted room has %d events from the bot, want 1", n)
			}
			continue
		}
		c := h.mediaEvent(t, room, results[i].(map[string]any))
		if c.MsgType != event.MsgImage || c.Body != "the garden" || c.FileName != "garden.png" || c.URL == "" ||
			c.Info.ThumbnailURL == "" || c.Info.ThumbnailInfo == nil || c.Info.ThumbnailInfo.Width != 200 {
			t.Fatalf("plain room's event = %+v, info %+v", c, c.Info)
		}
		if got := h.alice.download(t, c.URL); !bytes.Equal(got, img) {
			t.Fatalf("alice downloads %d bytes, not the %d sent", len(got), len(img))
		}
		h.waitImages(t, room, 1)
	}
	if n := uploadsBy(t, h.bot.id()); n != 4 {
		t.Fatalf("the bot uploaded %d files, want 4 (the image and its thumbnail, plain and encrypted)", n)
	}
	if left, _ := filepath.Glob(filepath.Join(h.env["DATA_DIR"], "spool", "*")); len(left) != 0 {
		t.Fatalf("spool holds %v", left)
	}

	t.Run("an encrypted room's avatar is uploaded in the clear", func(t *testing.T) {
		var pl event.PowerLevelsEventContent
		if err := h.alice.cli.StateEvent(context.Background(), s.room, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		pl.SetUserLevel(h.bot.id(), 100)
		if _, err := h.alice.cli.SendStateEvent(context.Background(), s.room, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		face := testPNG(t, 16, 16)
		eventually(t, 20*time.Second, func() error { // until the bot has seen its new level
			resp := h.request("set_room", map[string]any{"room": s.room.String(), "avatar": map[string]any{"data": base64.StdEncoding.EncodeToString(face)}})
			if resp["status"] != "ok" {
				return fmt.Errorf("set_room: %v", resp)
			}
			return nil
		})
		if got := roomAvatar(t, h.alice, s.room); !bytes.Equal(got, face) {
			t.Fatalf("alice downloads %d bytes without a key, not the %d sent", len(got), len(face))
		}
	})
}

// TestBroadcastMediaSurvivesKill: the bridge is killed (SIGKILL) while an image broadcast to
// three rooms hangs on the second room's send, after the upload; after the restart every room
// has the image exactly once, from the one upload made before the crash.
func TestBroadcastMediaSurvivesKill(t *testing.T) {
	proxy := newGateProxy(t)
	h := newHarness(t, map[string]string{"MATRIX_HOMESERVER": proxy.URL, "E2EE": "false"})
	rooms := h.sharedRooms(3)
	h.stop()
	h.startProcess()
	proxy.setHold(func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/rooms/"+rooms[1].String()+"/send/m.room.message/")
	})
	pic := testPNG(t, 64, 64)
	reqID := fmt.Sprintf("bmk-%d", time.Now().UnixNano())
	payload, _ := json.Marshal(map[string]any{"id": reqID, "to": roomStrings(rooms),
		"media": map[string]any{"data": base64.StdEncoding.EncodeToString(pic)}})
	h.rec.publish(h.base+"/bridge/request/broadcast", 1, string(payload))
	proxy.waitHeld(t)
	if n := uploadsBy(t, h.bot.id()); n != 1 {
		t.Fatalf("uploads before the crash = %d", n)
	}
	h.kill()
	proxy.setHold(nil)
	h.startProcess()
	data := h.ok(h.response("broadcast", reqID))
	if data["sent"] != 3.0 {
		t.Fatalf("response after the restart = %v", data)
	}
	for i, room := range rooms {
		c := h.mediaEvent(t, room, data["results"].([]any)[i].(map[string]any))
		if !bytes.Equal(h.alice.download(t, c.URL), pic) {
			t.Fatalf("room %s: the image has other bytes", room)
		}
		h.waitImages(t, room, 1)
	}
	if n := uploadsBy(t, h.bot.id()); n != 1 {
		t.Fatalf("uploads = %d, want 1", n)
	}
	if left, _ := filepath.Glob(filepath.Join(h.env["DATA_DIR"], "spool", "*")); len(left) != 0 {
		t.Fatalf("spool holds %v", left)
	}
}
