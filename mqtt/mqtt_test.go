package mqtt

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidateSegment(t *testing.T) {
	tests := []struct {
		name string
		seg  string
		ok   bool
	}{
		{"friendly name", "kitchen", true},
		{"room id", "!abc:example.org", true},
		{"alias without hash", "general:example.org", true},
		{"empty", "", false},
		{"hash", "a#b", false},
		{"plus", "a+b", false},
		{"slash", "a/b", false},
		{"nul", "a\x00", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateSegment(tc.seg)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidateSegment(%q) = %v", tc.seg, err)
			}
			if err != nil && !errors.Is(err, ErrInvalidSegment) {
				t.Fatalf("error does not wrap ErrInvalidSegment: %v", err)
			}
		})
	}
}

func FuzzSafeSegment(f *testing.F) {
	for _, s := range []string{"", "!abc:hs", "a/b#c+d", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if err := ValidateSegment(SafeSegment(s)); err != nil {
			t.Fatalf("SafeSegment(%q) = %q is not valid: %v", s, SafeSegment(s), err)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	good := Config{URL: "tcp://127.0.0.1:1883", ClientID: "m2m", BaseTopic: "matrix2mqtt", KeepAlive: 30 * time.Second, MaxInflight: 8}
	tests := []struct {
		name    string
		mutate  func(*Config)
		setting string // the error must name it; empty means valid
	}{
		{"valid", func(*Config) {}, ""},
		{"websocket", func(c *Config) { c.URL = "ws://broker:9001/mqtt" }, ""},
		{"tls alias", func(c *Config) { c.URL = "mqtts://broker:8883" }, ""},
		{"bad scheme", func(c *Config) { c.URL = "http://broker" }, "MQTT_URL"},
		{"no host", func(c *Config) { c.URL = "tcp://" }, "MQTT_URL"},
		{"empty client id", func(c *Config) { c.ClientID = "" }, "MQTT_CLIENT_ID"},
		{"wildcard base", func(c *Config) { c.BaseTopic = "home/#" }, "MQTT_BASE_TOPIC"},
		{"empty base level", func(c *Config) { c.BaseTopic = "home//m2m" }, "MQTT_BASE_TOPIC"},
		{"keepalive", func(c *Config) { c.KeepAlive = 0 }, "MQTT_KEEPALIVE"},
		{"inflight", func(c *Config) { c.MaxInflight = 0 }, "MQTT_MAX_INFLIGHT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mutate(&c)
			err := c.Validate()
			if tc.setting == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.setting) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tc.setting)
			}
		})
	}
}

func TestBrokerURL(t *testing.T) {
	for in, want := range map[string]string{
		"mqtt://h:1883":  "tcp://h:1883",
		"mqtts://h:8883": "ssl://h:8883",
		"tls://h:8883":   "ssl://h:8883",
		"ws://h:9001/":   "ws://h:9001/",
	} {
		if got := brokerURL(in); got != want {
			t.Errorf("brokerURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name, filter, topic string
		want                bool
	}{
		{"exact", "a/b", "a/b", true},
		{"other", "a/b", "a/c", false},
		{"plus", "a/+/c", "a/b/c", true},
		{"plus is one level", "a/+", "a/b/c", false},
		{"plus needs a level", "a/+", "a", false},
		{"plus matches empty level", "a/+", "a/", true},
		{"hash", "a/#", "a/b/c", true},
		{"hash matches the parent", "a/#", "a", true},
		{"hash alone", "#", "x/y", true},
		{"shorter topic", "a/b/c", "a/b", false},
		{"longer topic", "a/b", "a/b/c", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Match(tc.filter, tc.topic); got != tc.want {
				t.Fatalf("Match(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
			}
		})
	}
}

func FuzzMatch(f *testing.F) {
	f.Add("a/+/c", "a/b/c")
	f.Add("a/#", "a")
	f.Fuzz(func(t *testing.T, filter, topic string) {
		if !strings.ContainsAny(filter, "+#") && Match(filter, topic) != (filter == topic) {
			t.Fatalf("Match(%q, %q) without wildcards must be equality", filter, topic)
		}
	})
}
