package bridge

import (
	"strings"

	"github.com/matrix2mqtt/matrix2mqtt/matrix"
	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// topics builds and parses the bridge's topics under the base topic.
type topics struct{ base string }

func (t topics) state() string            { return t.base + "/bridge/state" }
func (t topics) info() string             { return t.base + "/bridge/info" }
func (t topics) rooms() string            { return t.base + "/bridge/rooms" }
func (t topics) stats() string            { return t.base + "/bridge/stats" }
func (t topics) event() string            { return t.base + "/bridge/event" }
func (t topics) requestFilter() string    { return t.base + "/bridge/request/+" }
func (t topics) sendFilter() string       { return t.base + "/send/+" }
func (t topics) response(a string) string { return t.base + "/bridge/response/" + a }
func (t topics) inbound(key string, kind matrix.Kind) string {
	return t.base + "/room/" + key + "/" + string(kind)
}

// roomEvent feeds a room's Home Assistant event entity; roomCommand and command carry the
// commands from chat, the latter for Home Assistant's device triggers.
func (t topics) roomEvent(key string) string   { return t.base + "/room/" + key + "/event" }
func (t topics) roomCommand(key string) string { return t.base + "/room/" + key + "/command" }
func (t topics) command(name string) string    { return t.base + "/command/" + name }

// route maps a request topic to its action and, for the `send/<target>` shortcut, its target
// as written in config or Matrix (`#` put back in front of an alias). responseAction is the action
// whose response topic answers the message, even when the topic is bad.
func (t topics) route(topic string) (action, target string, err *Error) {
	if rest, ok := strings.CutPrefix(topic, t.base+"/bridge/request/"); ok {
		if e := mqtt.ValidateSegment(rest); e != nil {
			return "", "", errorf(CodeUnknownAction, "action %q: %v", rest, e)
		}
		return rest, "", nil
	}
	if rest, ok := strings.CutPrefix(topic, t.base+"/send/"); ok {
		if e := mqtt.ValidateSegment(rest); e != nil {
			return ActionSend, "", errorf(CodeInvalidRequest, "target in topic: %v", e)
		}
		return ActionSend, topicTarget(rest), nil
	}
	return "", "", errorf(CodeUnknownAction, "topic %q is not a request topic", topic)
}

// topicTarget turns a topic segment into a target: IDs stay, `name:server` is an alias (topics
// cannot carry `#`), anything else is a friendly name.
func topicTarget(seg string) string {
	switch {
	case strings.HasPrefix(seg, "!"), strings.HasPrefix(seg, "@"):
		return seg
	case strings.Contains(seg, ":"):
		return "#" + seg
	}
	return seg
}
