package catalog

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestEveryActionIsDocumented holds docs/mqtt-api.md to the registry: each action that MQTT
// clients can request has its section, with a mosquitto_pub example that publishes it, and the
// docs name no action that does not exist.
func TestEveryActionIsDocumented(t *testing.T) {
	raw, err := os.ReadFile("../../../docs/mqtt-api.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	sections := map[string]string{}
	for _, part := range regexp.MustCompile("(?m)^### `?").Split(doc, -1)[1:] {
		name, body, _ := strings.Cut(part, "\n")
		sections[strings.Trim(name, "` ")] = body
	}
	for _, s := range Default().Public() {
		body, ok := sections[s.Name]
		if !ok {
			t.Errorf("docs/mqtt-api.md has no section '### %s'", s.Name)
			continue
		}
		if !strings.Contains(body, "mosquitto_pub") || !strings.Contains(body, "matrix2mqtt/bridge/request/"+s.Name) {
			t.Errorf("section %s has no mosquitto_pub example publishing to matrix2mqtt/bridge/request/%s", s.Name, s.Name)
		}
	}
	for _, m := range regexp.MustCompile(`matrix2mqtt/bridge/request/([a-z_]+)`).FindAllStringSubmatch(doc, -1) {
		if _, ok := Default().Spec(m[1]); !ok {
			t.Errorf("docs/mqtt-api.md publishes to the unknown action %q", m[1])
		}
	}
}
