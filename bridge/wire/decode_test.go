package wire

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestRequestID(t *testing.T) {
	tests := []struct {
		name, payload, want string
	}{
		{"string id", `{"id":"a1","to":5}`, "a1"},
		{"number id", `{"id":5}`, ""},
		{"broken JSON", `{"id":"x"`, ""},
		{"plain text", `plain`, ""},
		{"nested id is not the request's", `{"x":{"id":"inner"}}`, ""},
		{"long payload, id first", `{"id":"big","text":"` + strings.Repeat("a", 70000) + `"}`, "big"},
		{"long payload, id past 4 KiB", `{"text":"` + strings.Repeat("a", 70000) + `","id":"late"}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := RequestID([]byte(tc.payload)); got != tc.want {
				t.Errorf("RequestID = %q, want %q", got, tc.want)
			}
		})
	}
}

type embedded struct {
	ExpireS float64 `json:"expire_s,omitempty"`
}

type sample struct {
	ID   string `json:"id,omitempty"`
	To   string `json:"to"`
	Flag *bool  `json:"flag,omitempty"`
	embedded
	internal string
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name, payload, code, mention string
	}{
		{"valid", `{"id":"1","to":"x","flag":true,"expire_s":5}`, "", ""},
		{"unknown field", `{"to":"x","tp":"y"}`, CodeInvalidRequest, "field 'tp' is not known; this action takes id, to, flag, expire_s"},
		{"case variant", `{"To":"x"}`, CodeInvalidRequest, "'To' is not known"},
		{"duplicate", `{"to":"x","to":"y"}`, CodeInvalidRequest, "'to' is given twice"},
		{"wrong type", `{"to":5}`, CodeInvalidRequest, "field 'to' must be a string, not number"},
		{"embedded wrong type", `{"expire_s":"5"}`, CodeInvalidRequest, "field 'expire_s' must be a number"},
		{"bool", `{"flag":"yes"}`, CodeInvalidRequest, "'flag' must be true or false"},
		{"array", `[]`, CodeInvalidRequest, "JSON object"},
		{"empty", ``, CodeInvalidRequest, "JSON object"},
		{"trailing", `{"to":"x"} x`, CodeInvalidRequest, "after the JSON object"},
		{"truncated", `{"to":`, CodeInvalidRequest, "not valid JSON"},
		{"not UTF-8", "{\"to\":\"\xff\"}", CodeInvalidRequest, "UTF-8"},
		{"huge number", `{"expire_s":1e400}`, CodeInvalidRequest, "'expire_s'"},
		{"unexported field name", `{"internal":"x"}`, CodeInvalidRequest, "'internal' is not known"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var v sample
			err := Decode([]byte(tc.payload), &v)
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || err.Code != tc.code || !strings.Contains(err.Message, tc.mention) {
				t.Fatalf("Decode = %v, want %s mentioning %q", err, tc.code, tc.mention)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(`{"id":"1","to":"x","flag":true,"expire_s":5}`)
	f.Add(`{"to":"x","to":"y"}`)
	f.Add(`{"To":1e400}`)
	f.Fuzz(func(t *testing.T, payload string) {
		var v sample
		if err := Decode([]byte(payload), &v); err != nil && (err.Code != CodeInvalidRequest || err.Message == "") {
			t.Fatalf("Decode(%q) = %+v", payload, err)
		}
		RequestID([]byte(payload))
	})
}

// referenceKeys is checkKeys written plainly with the json.Decoder's tokens.
func referenceKeys(payload []byte, names []string) *Error {
	if !json.Valid(payload) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	_, _ = dec.Token()
	seen := map[string]bool{}
	for dec.More() {
		tok, _ := dec.Token()
		key := tok.(string)
		if seen[key] {
			return Errorf(CodeInvalidRequest, "field '%s' is given twice", key)
		}
		seen[key] = true
		if !slices.Contains(names, key) {
			return unknownField(key, names)
		}
		var skip json.RawMessage
		_ = dec.Decode(&skip)
	}
	return nil
}

// FuzzCheckKeys holds the scanner to the plain version on every JSON object.
func FuzzCheckKeys(f *testing.F) {
	for _, s := range []string{`{"to":"x","to":"y"}`, `{"a":{"to":[1,"}"]},"to":"\"x"}`, `{"\u0074o":1}`, `{ "to" : [ { } ] , "id" : null }`} {
		f.Add(s)
	}
	names := FieldNames(&sample{})
	f.Fuzz(func(t *testing.T, payload string) {
		p := bytes.TrimSpace([]byte(payload))
		if len(p) == 0 || p[0] != '{' || !json.Valid(p) || !utf8.Valid(p) { // Decode checks both first
			return
		}
		got, want := checkKeys(p, names), referenceKeys(p, names)
		if (got == nil) != (want == nil) || got != nil && got.Message != want.Message {
			t.Fatalf("checkKeys(%s) = %v, want %v", p, got, want)
		}
	})
}
