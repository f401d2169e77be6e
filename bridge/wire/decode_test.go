package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
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
	Kept     string           `json:"kept,omitempty" wire:"own"`
	Media    *part            `json:"media,omitempty"`
	Options  []part           `json:"options,omitempty"`
	Users    map[string]int   `json:"users,omitempty"`
	Parts    map[string]*part `json:"parts,omitempty"`
	Own      ownDecoding      `json:"own,omitempty"`
}

type part struct {
	Key   string `json:"key"`
	Label string `json:"label,omitempty"`
	Inner *part  `json:"inner,omitempty"`
}

// ownDecoding decodes itself: checkKeys leaves its objects alone.
type ownDecoding struct{ raw json.RawMessage }

func (o *ownDecoding) UnmarshalJSON(data []byte) error {
	o.raw = data
	return nil
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name, payload, code, mention string
	}{
		{"valid", `{"id":"1","to":"x","flag":true,"expire_s":5}`, "", ""},
		{"unknown field", `{"to":"x","tp":"y"}`, CodeInvalidRequest, "field 'tp' is not known; this action takes id, to, flag, expire_s, media"},
		{"nested", `{"media":{"key":"k","inner":{"key":"i"}},"options":[{"key":"a"},{"key":"b","label":"B"}],"users":{"@a":1,"@b":2},"parts":{"x":{"key":"x"}},"own":{"Any":1,"Any":2}}`, "", ""},
		{"nested unknown field", `{"media":{"kee":"k"}}`, CodeInvalidRequest, "field 'media.kee' is not known; 'media' takes key, label, inner"},
		{"nested case variant", `{"media":{"Key":"k"}}`, CodeInvalidRequest, "field 'media.Key' is not known"},
		{"nested twice", `{"media":{"key":"a","key":"b"}}`, CodeInvalidRequest, "field 'media.key' is given twice"},
		{"deeper case variant", `{"media":{"key":"a","inner":{"KEY":"b"}}}`, CodeInvalidRequest, "field 'media.inner.KEY' is not known"},
		{"list element case variant", `{"options":[{"key":"a"},{"Label":"b"}]}`, CodeInvalidRequest, "field 'options[1].Label' is not known"},
		{"map key twice", `{"users":{"@a":1,"@a":2}}`, CodeInvalidRequest, "field 'users.@a' is given twice"},
		{"map value case variant", `{"parts":{"x":{"KEY":"x"}}}`, CodeInvalidRequest, "field 'parts.x.KEY' is not known"},
		{"nested wrong type", `{"media":{"key":5}}`, CodeInvalidRequest, "field 'media.key' must be a string"},
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
		{"the bridge's own field", `{"kept":"x"}`, CodeInvalidRequest, "field 'kept' is not known"},
		{"the bridge's own field, empty", `{"kept":""}`, CodeInvalidRequest, "field 'kept' is not known"},
		{"the bridge's own field is not offered", `{"kep":"x"}`, CodeInvalidRequest, "takes id, to, flag, expire_s, media, options, users, parts, own"},
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
func referenceKeys(payload []byte, t reflect.Type, path string) *Error {
	if !json.Valid(payload) {
		return nil
	}
	t = derefType(t)
	dec := json.NewDecoder(bytes.NewReader(payload))
	_, _ = dec.Token()
	seen := map[string]bool{}
	for dec.More() {
		tok, _ := dec.Token()
		key := tok.(string)
		if seen[key] {
			return Errorf(CodeInvalidRequest, "field '%s%s' is given twice", path, key)
		}
		seen[key] = true
		valueType := t
		if t.Kind() == reflect.Map {
			valueType = t.Elem()
		} else if !slices.Contains(fieldsOf(t).names, key) {
			return unknownField(path, key, fieldsOf(t).names)
		} else {
			valueType = fieldsOf(t).types[key]
		}
		var value json.RawMessage
		_ = dec.Decode(&value)
		if err := referenceValue(value, valueType, path+key); err != nil {
			return err
		}
	}
	return nil
}

func referenceValue(value json.RawMessage, t reflect.Type, path string) *Error {
	t = derefType(t)
	switch {
	case value[0] == '{' && checkable(t):
		return referenceKeys(value, t, path+".")
	case value[0] == '[' && t.Kind() == reflect.Slice && checkable(derefType(t.Elem())):
		var list []json.RawMessage
		_ = json.Unmarshal(value, &list)
		for i, v := range list {
			if err := referenceValue(v, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// FuzzCheckKeys holds the scanner to the plain version on every JSON object.
func FuzzCheckKeys(f *testing.F) {
	for _, s := range []string{`{"to":"x","to":"y"}`, `{"a":{"to":[1,"}"]},"to":"\"x"}`, `{"\u0074o":1}`, `{ "to" : [ { } ] , "id" : null }`,
		`{"media":{"key":"a","inner":{"key":"b","Key":1}},"options":[{"key":"x"} , {"label":"}"}]}`, `{"users":{"a":1,"a":2},"parts":{"p":{"inner":{}}},"own":{"x":1}}`} {
		f.Add(s)
	}
	typ := reflect.TypeFor[sample]()
	f.Fuzz(func(t *testing.T, payload string) {
		p := bytes.TrimSpace([]byte(payload))
		if len(p) == 0 || p[0] != '{' || !json.Valid(p) || !utf8.Valid(p) { // Decode checks both first
			return
		}
		got, want := checkKeys(p, typ), referenceKeys(p, typ, "")
		if (got == nil) != (want == nil) || got != nil && got.Message != want.Message {
			t.Fatalf("checkKeys(%s) = %v, want %v", p, got, want)
		}
	})
}
