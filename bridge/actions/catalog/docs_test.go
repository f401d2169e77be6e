package catalog

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
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

// TestDurableActionsAreListed: the places of docs/mqtt-api.md that list the durable actions
// (the idempotency key of request ids, the delivery table) name each durable action and no
// immediate one, and the list of immediate actions that run once per id is the Once ones.
func TestDurableActionsAreListed(t *testing.T) {
	raw, err := os.ReadFile("../../../docs/mqtt-api.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	durable := func(s actions.Spec) bool { _, ok := s.New().(actions.Durable); return ok }
	lists := map[string]struct {
		re   *regexp.Regexp
		kind string
		is   func(actions.Spec) bool
	}{
		"the request ids' idempotency key": {regexp.MustCompile(`For every durable action \(([^)]*)\)`), "durable", durable},
		"the delivery table":               {regexp.MustCompile(`(?m)^\| \| (.*) \(durable\) \|`), "durable", durable},
		"the immediate idempotency keys": {regexp.MustCompile(`The immediate actions that change Matrix \(([^)]*)\)`), "Once",
			func(s actions.Spec) bool { return s.Once }},
	}
	for place, list := range lists {
		re := list.re
		m := re.FindStringSubmatch(doc)
		if m == nil {
			t.Errorf("docs/mqtt-api.md: %s does not list the durable actions", place)
			continue
		}
		listed := map[string]bool{}
		for _, name := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(m[1], -1) {
			listed[name[1]] = true
		}
		for _, s := range Default().Public() {
			if is := list.is(s); is != listed[s.Name] {
				t.Errorf("docs/mqtt-api.md: %s lists %s: %v; it is %s: %v", place, s.Name, listed[s.Name], list.kind, is)
			}
		}
	}
}
