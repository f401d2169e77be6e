package wire

import (
	"strings"

	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// Topics builds and parses the bridge's topics under the base topic.
type Topics struct {
	Base string
	// Shortcuts are the actions with a `<base>/<action>/<target>` topic.
	Shortcuts []string
}

// The bridge's own retained topics and its event topic.
func (t Topics) State() string { return t.Base + "/bridge/state" }
func (t Topics) Info() string  { return t.Base + "/bridge/info" }
func (t Topics) Rooms() string { return t.Base + "/bridge/rooms" }
func (t Topics) Stats() string { return t.Base + "/bridge/stats" }
func (t Topics) Event() string { return t.Base + "/bridge/event" }

// Request is the topic of action's requests; RequestFilter subscribes to all of them.
func (t Topics) Request(action string) string { return t.Base + "/bridge/request/" + action }
func (t Topics) RequestFilter() string        { return t.Request("+") }

// Response is the topic of action's responses.
func (t Topics) Response(action string) string { return t.Base + "/bridge/response/" + action }

// Shortcut is the topic `<base>/<action>/<target>`; Send is that of send.
func (t Topics) Shortcut(action, target string) string { return t.Base + "/" + action + "/" + target }
func (t Topics) Send(target string) string             { return t.Shortcut("send", target) }

// Room is the topic of an inbound kind (message, reaction, redaction, command, event) in the
// room whose topic key is key.
func (t Topics) Room(key string, kind Kind) string {
	return t.Base + "/room/" + key + "/" + string(kind)
}

// Command carries accepted chat commands by name, for Home Assistant's device triggers.
func (t Topics) Command(name string) string { return t.Base + "/command/" + name }

// Route maps a request topic to its action and, for the `send/<target>` shortcut, its target as
// written in config or Matrix (`#` put back in front of an alias). On error, action is still the
// action whose response topic answers the message, where it can be told.
func (t Topics) Route(topic string) (action, target string, err *Error) {
	if rest, ok := strings.CutPrefix(topic, t.Base+"/bridge/request/"); ok {
		if e := mqtt.ValidateSegment(rest); e != nil {
			return "", "", Errorf(CodeUnknownAction, "action %q: %v", rest, e)
		}
		return rest, "", nil
	}
	for _, action := range t.Shortcuts {
		if rest, ok := strings.CutPrefix(topic, t.Base+"/"+action+"/"); ok {
			if e := mqtt.ValidateSegment(rest); e != nil {
				return action, "", Errorf(CodeInvalidRequest, "target in topic: %v", e)
			}
			return action, TopicTarget(rest), nil
		}
	}
	return "", "", Errorf(CodeUnknownAction, "topic %q is not a request topic", topic)
}

// TopicTarget turns a topic segment into a target: IDs stay, `name:server` is an alias (topics
// cannot carry `#`), anything else is a friendly name.
func TopicTarget(seg string) string {
	switch {
	case strings.HasPrefix(seg, "!"), strings.HasPrefix(seg, "@"):
		return seg
	case strings.Contains(seg, ":"):
		return "#" + seg
	}
	return seg
}
