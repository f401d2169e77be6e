package discovery

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/matrix2mqtt/matrix2mqtt/mqtt"
)

// fakeBroker records publishes, and hands the retained config to a subscription as a broker
// would.
type fakeBroker struct {
	retained []byte

	mu        sync.Mutex
	published []mqtt.Message
}

func (f *fakeBroker) Publish(_ context.Context, topic string, retained bool, payload []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.published = append(f.published, mqtt.Message{Topic: topic, Payload: payload, Retained: retained})
	return nil
}

func (f *fakeBroker) Subscribe(_ context.Context, filter string, handle func(mqtt.Message)) error {
	if f.retained != nil {
		go handle(mqtt.Message{Topic: filter, Payload: f.retained, Retained: true})
	}
	return nil
}

func (f *fakeBroker) Unsubscribe(context.Context, string) error { return nil }

func (f *fakeBroker) messages() []mqtt.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]mqtt.Message{}, f.published...)
}

// testSetup is an announcer's config and device with the given friendly names.
type testSetup struct {
	cfg    Config
	device Bridge
}

func haConfig(names map[string]string, enabled bool) testSetup {
	var list []string
	for name := range names {
		list = append(list, name)
	}
	slices.Sort(list)
	return testSetup{
		cfg:    Config{Enabled: enabled, Prefix: "ha", StatusTopic: "ha/status"},
		device: Bridge{Prefix: "ha", BaseTopic: "m2m", NodeID: ObjectID("@bot:hs"), Name: "matrix2mqtt @bot:hs", Targets: list, Rooms: list},
	}
}

func newTestDiscovery(setup testSetup, retained []byte) (*Announcer, *fakeBroker) {
	f := &fakeBroker{retained: retained}
	return NewAnnouncer(setup.cfg, setup.device, f, func() time.Duration { return 10 * time.Millisecond }), f
}

func components(t *testing.T, payload []byte) map[string]json.RawMessage {
	t.Helper()
	var m struct {
		Cmps map[string]json.RawMessage `json:"cmps"`
	}
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatal(err)
	}
	return m.Cmps
}

func TestDiscoveryAnnounce(t *testing.T) {
	old, _ := newTestDiscovery(haConfig(map[string]string{"alice": "@alice:hs", "kitchen": "!k:hs"}, true), nil)
	_, previous, err := Payload(old.device)
	if err != nil {
		t.Fatal(err)
	}
	topic := "ha/device/matrix2mqtt_bot_hs/config"
	tests := []struct {
		name     string
		names    map[string]string
		enabled  bool
		retained []byte
		check    func(t *testing.T, msgs []mqtt.Message)
	}{
		{"first start", map[string]string{"alice": "@alice:hs"}, true, nil, func(t *testing.T, msgs []mqtt.Message) {
			if len(msgs) != 1 || msgs[0].Topic != topic || !msgs[0].Retained {
				t.Fatalf("published %+v", msgs)
			}
		}},
		{"same config", map[string]string{"alice": "@alice:hs", "kitchen": "!k:hs"}, true, previous, func(t *testing.T, msgs []mqtt.Message) {
			if len(msgs) != 1 {
				t.Fatalf("published %d messages, want only the config", len(msgs))
			}
		}},
		{"target removed", map[string]string{"alice": "@alice:hs"}, true, previous, func(t *testing.T, msgs []mqtt.Message) {
			if len(msgs) != 2 {
				t.Fatalf("published %d messages, want removal and config", len(msgs))
			}
			removal, config := components(t, msgs[0].Payload), components(t, msgs[1].Payload)
			if string(removal["notify_kitchen"]) != `{"p":"notify"}` || string(removal["room_kitchen"]) != `{"p":"event"}` {
				t.Errorf("removal = %s %s", removal["notify_kitchen"], removal["room_kitchen"])
			}
			if _, ok := config["notify_kitchen"]; ok {
				t.Error("config still has notify_kitchen")
			}
		}},
		{"off with an old config", nil, false, previous, func(t *testing.T, msgs []mqtt.Message) {
			if len(msgs) != 1 || msgs[0].Topic != topic || len(msgs[0].Payload) != 0 || !msgs[0].Retained {
				t.Fatalf("published %+v, want one empty retained message", msgs)
			}
		}},
		{"off without an old config", nil, false, nil, func(t *testing.T, msgs []mqtt.Message) {
			if len(msgs) != 0 {
				t.Fatalf("published %+v", msgs)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, f := newTestDiscovery(haConfig(tc.names, tc.enabled), tc.retained)
			d.Announce(context.Background())
			tc.check(t, f.messages())
		})
	}
}

func TestDiscoveryBirth(t *testing.T) {
	tests := []struct {
		name    string
		enabled bool
		msg     mqtt.Message
		again   bool
	}{
		{"online", true, mqtt.Message{Topic: "ha/status", Payload: []byte("online")}, true},
		{"offline", true, mqtt.Message{Topic: "ha/status", Payload: []byte("offline")}, false},
		{"retained online", true, mqtt.Message{Topic: "ha/status", Payload: []byte("online"), Retained: true}, false},
		{"discovery off", false, mqtt.Message{Topic: "ha/status", Payload: []byte("online")}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, f := newTestDiscovery(haConfig(nil, tc.enabled), nil)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				d.Run(ctx)
				close(done)
			}()
			d.OnStatus(tc.msg)
			d.OnStatus(tc.msg) // a second birth during the delay is answered by the same announcement
			time.Sleep(200 * time.Millisecond)
			cancel()
			<-done
			want := 0
			if tc.again {
				want = 1
			}
			if got := len(f.messages()); got != want {
				t.Fatalf("published %d configs, want %d", got, want)
			}
		})
	}
}
