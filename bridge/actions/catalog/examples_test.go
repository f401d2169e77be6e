package catalog

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/matrix2mqtt/matrix2mqtt/bridge/actions"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/targets"
	"github.com/matrix2mqtt/matrix2mqtt/bridge/wire"
)

// exampleTopics are the topics of the examples: the default base topic.
func exampleTopics() wire.Topics {
	return wire.Topics{Base: "matrix2mqtt", Shortcuts: Default().Shortcuts()}
}

// checkExample holds one example request to the registry. A payload without templates must
// decode and validate (a friendly name that only the example's configuration knows may be an
// unknown target); a Jinja-templated one must use only fields its action takes.
func checkExample(t *testing.T, where, topic, payload string) {
	t.Helper()
	action, target, werr := exampleTopics().Route(topic)
	if werr != nil {
		t.Errorf("%s: topic %s: %v", where, topic, werr)
		return
	}
	spec, ok := Default().Spec(action)
	if !ok || spec.Internal {
		t.Errorf("%s: %s publishes to the unknown action %q", where, topic, action)
		return
	}
	if strings.Contains(payload, "{{") {
		keys, ok := templateKeys(payload)
		if !ok {
			t.Errorf("%s: cannot find the request object in the template %q", where, payload)
			return
		}
		nulls := "{" + strings.Join(keys, ":null,") + ":null}"
		if len(keys) == 0 {
			nulls = "{}"
		}
		if err := wire.Decode([]byte(nulls), spec.New()); err != nil && strings.Contains(err.Message, "is not known") {
			t.Errorf("%s: %s: %s", where, action, err.Message)
		}
		return
	}
	if spec.Shortcut != nil && target != "" && !strings.HasPrefix(payload, "{") {
		return // a raw shortcut payload (a text, a file)
	}
	if _, err := Default().Parse(action, target, []byte(payload), exampleTargets); err != nil &&
		err.Code != wire.CodeUnknownTarget {
		t.Errorf("%s: %s %s: %s: %s", where, action, payload, err.Code, err.Message)
	}
}

// exampleTargets knows the friendly names and the group the examples use, so that their other
// fields are validated too.
var exampleTargets actions.Targets = targets.New(targets.Config{
	Names: targets.Names{"family": "!family:example.org", "kitchen": "!kitchen:example.org", "general": "#general:example.org",
		"guests": "!guests:example.org", "alice": "@alice:example.org"},
	Groups: map[string][]string{"announce": {"kitchen", "general"}},
})

// templateKeys finds the keys of the request object in a Home Assistant payload template such
// as `{{ {"to": "alice", "text": …} | to_json }}`: the quoted keys at the object's top level.
func templateKeys(payload string) ([]string, bool) {
	start := strings.IndexAny(payload, "{")
	for start >= 0 && start+1 < len(payload) && strings.ContainsRune("{%#", rune(payload[start+1])) { // Jinja's own {{, {% and {#
		start += 2 + strings.IndexAny(payload[start+2:], "{")
	}
	if start < 0 {
		return nil, false
	}
	var keys []string
	depth, escaped := 0, false
	var quote rune // the quote of the string being read; 0 outside strings (Jinja takes ' and ")
	var token strings.Builder
	for _, r := range payload[start:] {
		switch {
		case quote != 0 && escaped:
			escaped = false
			token.WriteRune(r)
		case quote != 0 && r == '\\':
			escaped = true
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			token.WriteRune(r)
		case r == '"' || r == '\'':
			quote = r
			token.Reset()
		case r == ':' && depth == 1 && token.Len() > 0:
			keys = append(keys, `"`+token.String()+`"`)
			token.Reset()
		case r == '{' || r == '[' || r == '(':
			depth++
		case r == '}' || r == ']' || r == ')':
			depth--
			if depth == 0 {
				return keys, true
			}
		case r != ' ' && r != '\n':
			token.Reset()
		}
	}
	return nil, false
}

// TestDocExamplesAreValidRequests: every mosquitto_pub example in docs/mqtt-api.md is a request
// its action takes.
func TestDocExamplesAreValidRequests(t *testing.T) {
	raw, err := os.ReadFile("../../../docs/mqtt-api.md")
	if err != nil {
		t.Fatal(err)
	}
	example := regexp.MustCompile(`mosquitto_pub [^\n]*?-t (matrix2mqtt/\S+) -m '((?:[^']|'\\'')*)'`)
	matches := example.FindAllStringSubmatch(string(raw), -1)
	if len(matches) < len(Default().Public()) {
		t.Fatalf("found %d examples, fewer than the %d actions", len(matches), len(Default().Public()))
	}
	for _, m := range matches {
		checkExample(t, "docs/mqtt-api.md", m[1], strings.ReplaceAll(m[2], `'\''`, "'"))
	}
}

// TestHomeAssistantExamplesAreValidRequests: every mqtt.publish in configs/homeassistant
// publishes a request (or a template of one) that its action takes.
func TestHomeAssistantExamplesAreValidRequests(t *testing.T) {
	files, err := filepath.Glob("../../../configs/homeassistant/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no Home Assistant examples: %v", err)
	}
	found := 0
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var doc any
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		eachPublish(doc, func(topic, payload string) {
			found++
			if strings.HasPrefix(topic, "matrix2mqtt/") {
				checkExample(t, filepath.Base(file), topic, payload)
			}
		})
	}
	if found == 0 {
		t.Fatal("no mqtt.publish found in the examples")
	}
}

// eachPublish calls fn with the topic and payload of every mqtt.publish action in a YAML tree.
func eachPublish(node any, fn func(topic, payload string)) {
	switch n := node.(type) {
	case map[string]any:
		if n["action"] == "mqtt.publish" {
			if data, ok := n["data"].(map[string]any); ok {
				topic, _ := data["topic"].(string)
				payload, _ := data["payload"].(string)
				fn(topic, payload)
			}
		}
		for _, v := range n {
			eachPublish(v, fn)
		}
	case []any:
		for _, v := range n {
			eachPublish(v, fn)
		}
	}
}
