package matrix

import (
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix/event"
)

// FuzzNormalise maps arbitrary event content of each published type (as a homeserver or
// another user could send it) to an inbound event: it never panics, and what it publishes
// encodes to JSON.
func FuzzNormalise(f *testing.F) {
	types := []event.Type{event.EventMessage, event.EventSticker, event.EventReaction, event.EventRedaction}
	f.Add(uint8(0), `{"msgtype":"m.text","body":"hi","format":"org.matrix.custom.html","formatted_body":"<b>hi</b>"}`)
	f.Add(uint8(0), `{"msgtype":"m.text","body":"* new","m.new_content":{"msgtype":"m.text","body":"new"},"m.relates_to":{"rel_type":"m.replace","event_id":"$old"}}`)
	f.Add(uint8(0), `{"msgtype":"m.image","body":"a.png","url":"mxc://hs/a","info":{"w":1,"h":2,"size":3,"mimetype":"image/png"}}`)
	f.Add(uint8(0), `{"msgtype":"m.location","body":"here","geo_uri":"geo:1,2"}`)
	f.Add(uint8(1), `{"body":"sticker","url":"mxc://hs/s"}`)
	f.Add(uint8(2), `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$e","key":"👍"}}`)
	f.Add(uint8(3), `{"redacts":"$e","reason":"spam"}`)
	f.Fuzz(func(t *testing.T, kind uint8, raw string) {
		typ := types[int(kind)%len(types)]
		evt := &event.Event{Type: typ, ID: "$e", RoomID: "!r:hs", Sender: "@alice:hs", Timestamp: 1700000000000}
		if err := json.Unmarshal([]byte(raw), &evt.Content); err != nil {
			return
		}
		if err := evt.Content.ParseRaw(typ); err != nil {
			return
		}
		ev, ok := normalise(evt)
		if !ok {
			return
		}
		if ev.Kind == "" || ev.ID != evt.ID || ev.RoomID != evt.RoomID {
			t.Fatalf("normalise = %+v", ev)
		}
		if _, err := json.Marshal(ev.Payload); err != nil {
			t.Fatalf("published payload does not encode: %v", err)
		}
	})
}
