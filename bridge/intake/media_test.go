package intake

import (
	"strings"
	"testing"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions/catalog"
)

// TestPayloadLimit: actions that carry a file may be as large as MEDIA_MAX_BYTES (in base64 in
// a JSON request, raw on the shortcut); the others stay within MAX_PAYLOAD_BYTES.
func TestPayloadLimit(t *testing.T) {
	in := New(Deps{Registry: catalog.Default(), Queue: &fakeQueue{}, MaxPayloadBytes: 65536, MaxFileBytes: 3 << 20})
	for _, tc := range []struct {
		name, action, target string
		want                 int
		setting              string
	}{
		{"text request", "send", "", 65536, "MAX_PAYLOAD_BYTES"},
		{"text shortcut", "send", "kitchen", 65536, "MAX_PAYLOAD_BYTES"},
		{"media request", "send_media", "", 4<<20 + 65536, "MEDIA_MAX_BYTES"},
		{"media shortcut", "send_media", "kitchen", 3 << 20, "MEDIA_MAX_BYTES"},
		{"unknown action", "nope", "", 65536, "MAX_PAYLOAD_BYTES"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, setting := in.payloadLimit(tc.action, tc.target)
			if got != tc.want || !strings.HasPrefix(setting, tc.setting) {
				t.Fatalf("limit %d (%s), want %d (%s)", got, setting, tc.want, tc.setting)
			}
		})
	}
}
