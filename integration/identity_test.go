package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
)

// TestE2EEIdentityNeverResetsOnItsOwn: on a new data dir, an account that has cross-signing
// keys and no E2EE_RECOVERY_KEY keeps its keys: the bridge runs with E2EE broken (info, event
// and log say what to do), serves unencrypted rooms and refuses encrypted ones. Only
// E2EE_RESET_IDENTITY makes new keys.
func TestE2EEIdentityNeverResetsOnItsOwn(t *testing.T) {
	h := newHarness(t, nil)
	plain := h.sharedRoom(nil)
	encrypted := h.sharedRoom(&mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{encryptionState()}})
	var original string
	eventually(t, 20*time.Second, func() error {
		if original = masterKeyOf(t, h.bot); original == "" {
			return fmt.Errorf("no cross-signing keys yet")
		}
		return nil
	})

	h.stop()
	h.env["DATA_DIR"] = t.TempDir()
	h.rec.mu.Lock()
	h.rec.msgs = nil
	h.rec.mu.Unlock()
	h.start()
	info := h.rec.wait(30*time.Second, "info with E2EE broken", func(m message) bool {
		return m.Topic == h.base+"/bridge/info" && strings.Contains(string(m.Payload), `"status":"broken"`)
	}).json(t)
	e2ee, _ := info["e2ee"].(map[string]any)
	if problem, _ := e2ee["problem"].(string); !strings.Contains(problem, "E2EE_RECOVERY_KEY") || !strings.Contains(problem, "E2EE_RESET_IDENTITY") {
		t.Fatalf("info does not say what to do: %v", e2ee)
	}
	h.rec.wait(10*time.Second, "e2ee_broken notice", func(m message) bool {
		return m.Topic == h.base+"/bridge/event" && strings.Contains(string(m.Payload), `"e2ee_broken"`) &&
			strings.Contains(string(m.Payload), "E2EE_RECOVERY_KEY")
	})
	if got := masterKeyOf(t, h.bot); got != original {
		t.Fatalf("the master key changed from %s to %s without E2EE_RESET_IDENTITY", original, got)
	}
	h.ok(h.request("send", map[string]any{"to": plain.String(), "text": "unencrypted rooms still work"}))
	eventually(t, 20*time.Second, func() error {
		resp := h.request("send", map[string]any{"to": encrypted.String(), "text": "must not go out in plaintext"})
		if resp["status"] == "ok" {
			t.Fatalf("plaintext sent into an encrypted room: %v", resp)
		}
		if e, _ := resp["error"].(map[string]any); e["code"] != "not_allowed" {
			return fmt.Errorf("response = %v", resp)
		}
		return nil
	})

	h.stop()
	h.env["DATA_DIR"] = t.TempDir()
	h.env["E2EE_RESET_IDENTITY"] = "true"
	h.rec.mu.Lock()
	h.rec.msgs = nil
	h.rec.mu.Unlock()
	h.start()
	h.rec.wait(30*time.Second, "info of the reset identity", func(m message) bool {
		return m.Topic == h.base+"/bridge/info" && strings.Contains(string(m.Payload), `"status":"verified"`)
	})
	if got := masterKeyOf(t, h.bot); got == original || got == "" {
		t.Fatalf("E2EE_RESET_IDENTITY did not make new keys: %q", got)
	}
}
