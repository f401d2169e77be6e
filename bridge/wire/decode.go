package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// idScanLimit is how much of a payload RequestID reads at most.
const idScanLimit = 4096

// RequestID digs the string "id" out of the top level of a payload that may not decode as its
// action's request, so that even an invalid request is answered with its id: from a JSON object
// up to 4 KiB, or from the first 4 KiB of a longer payload (one over MAX_PAYLOAD_BYTES is not
// parsed whole).
func RequestID(payload []byte) string {
	if len(payload) > idScanLimit {
		payload = payload[:idScanLimit]
	} else if !json.Valid(payload) {
		return ""
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return ""
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return ""
		}
		if key == "id" {
			var id string
			if dec.Decode(&id) != nil {
				return ""
			}
			return id
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return ""
		}
	}
	return ""
}

// Decode decodes payload into v, a pointer to a request struct: a JSON object whose keys are
// exactly the struct's field names (no unknown, duplicated or differently cased keys) and whose
// values have the fields' types. The error names the field.
func Decode(payload []byte, v any) *Error {
	if !utf8.Valid(payload) {
		return Errorf(CodeInvalidRequest, "the payload is not UTF-8")
	}
	trimmed := bytes.TrimSpace(payload)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return Errorf(CodeInvalidRequest, "the payload must be a JSON object")
	}
	names := FieldNames(v)
	if err := checkKeys(trimmed, reflect.TypeOf(v)); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, v, names)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Errorf(CodeInvalidRequest, "the payload has data after the JSON object")
	}
	return nil
}

// checkKeys walks the keys of the request object and of the objects nested in it that decode
// into structs (or maps): encoding/json would take `TO` for `to` and let a repeated key silently
// win, both of which hide mistakes in an automation. It scans the payload itself, without
// allocating per value, and relies on the json.Decoder after it for syntax errors: on malformed
// JSON it may stop early without an error.
func checkKeys(payload []byte, t reflect.Type) *Error {
	if !json.Valid(payload) {
		return nil // the decoder names the syntax error
	}
	s := scanner{p: payload}
	return s.object(derefType(t), "")
}

// object checks the object at s.i, which decodes into t (a struct, or a map with string keys),
// and leaves s.i after it. path names the object in errors ("" for the request, "media.").
func (s *scanner) object(t reflect.Type, path string) *Error {
	var fields *structFields
	if t.Kind() == reflect.Struct {
		fields = fieldsOf(t)
	}
	var seen [32][]byte
	n := 0
	s.i++ // '{'
	for {
		s.space()
		if s.done() || s.p[s.i] == '}' {
			s.i++
			return nil
		}
		key := s.str()
		if bytes.IndexByte(key, '\\') >= 0 {
			var unescaped string
			_ = json.Unmarshal(s.p[s.last-1:s.i], &unescaped)
			key = []byte(unescaped)
		}
		for _, k := range seen[:n] {
			if bytes.Equal(k, key) {
				return Errorf(CodeInvalidRequest, "field '%s%s' is given twice", path, key)
			}
		}
		if n < len(seen) {
			seen[n] = key
			n++
		}
		valueType := t
		if fields == nil {
			valueType = t.Elem()
		} else if valueType = fields.types[string(key)]; valueType == nil {
			return unknownField(path, string(key), fields.names)
		}
		s.space()
		s.i++ // ':'
		s.space()
		if err := s.nested(valueType, place{parent: path, key: key, index: -1}); err != nil {
			return err
		}
		s.space()
		if s.done() || s.p[s.i] == '}' {
			s.i++
			return nil
		}
		s.i++ // ','
	}
}

// place is where a value sits, for errors: its parent's path, then its key or its list index.
// Its path is only spelt out for a value that is looked into, so that scanning allocates nothing
// for the others.
type place struct {
	parent string
	key    []byte
	index  int // -1: the value of key
}

func (p place) String() string {
	if p.index >= 0 {
		return p.parent + "[" + strconv.Itoa(p.index) + "]"
	}
	return p.parent + string(p.key)
}

// nested checks the value at s.i, which decodes into t: an object into a struct or map is
// checked like the request, a list element by element; anything else is stepped over.
func (s *scanner) nested(t reflect.Type, at place) *Error {
	t = derefType(t)
	switch {
	case s.done():
		return nil
	case s.p[s.i] == '{' && checkable(t):
		return s.object(t, at.String()+".")
	case s.p[s.i] == '[' && t.Kind() == reflect.Slice && checkable(derefType(t.Elem())):
		list := at.String()
		s.i++ // '['
		for i := 0; ; i++ {
			s.space()
			if s.done() || s.p[s.i] == ']' {
				s.i++
				return nil
			}
			if err := s.nested(t.Elem(), place{parent: list, index: i}); err != nil {
				return err
			}
			s.space()
			if s.done() || s.p[s.i] == ']' {
				s.i++
				return nil
			}
			s.i++ // ','
		}
	}
	s.value()
	return nil
}

var unmarshaler = reflect.TypeFor[json.Unmarshaler]()

// checkable tells the types whose objects checkKeys looks into: structs and maps with string
// keys (whose keys are data: only repeats are refused) that do not decode themselves.
func checkable(t reflect.Type) bool {
	if t.Implements(unmarshaler) || reflect.PointerTo(t).Implements(unmarshaler) {
		return false
	}
	return t.Kind() == reflect.Struct || t.Kind() == reflect.Map && t.Key().Kind() == reflect.String
}

func derefType(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// scanner steps through valid JSON.
type scanner struct {
	p    []byte
	i    int
	last int // start of the last string's content
}

func (s *scanner) done() bool { return s.i >= len(s.p) }

func (s *scanner) space() {
	for !s.done() && (s.p[s.i] == ' ' || s.p[s.i] == '\t' || s.p[s.i] == '\n' || s.p[s.i] == '\r') {
		s.i++
	}
}

// str steps over a string at s.i and returns its content as written (escapes kept).
func (s *scanner) str() []byte {
	s.i++ // opening quote
	s.last = s.i
	for !s.done() && s.p[s.i] != '"' {
		if s.p[s.i] == '\\' {
			s.i++
		}
		s.i++
	}
	s.i++ // closing quote
	return s.p[s.last : s.i-1]
}

// value steps over one value: a string, an object or array (with what is nested in it), or a
// literal.
func (s *scanner) value() {
	depth := 0
	for !s.done() {
		switch c := s.p[s.i]; {
		case c == '"':
			s.str()
			if depth == 0 {
				return
			}
			continue
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			if depth == 0 {
				return
			}
			if depth--; depth == 0 {
				s.i++
				return
			}
		case (c == ',') && depth == 0:
			return
		}
		s.i++
	}
}

// unknownField refuses a key that the object at path does not take.
func unknownField(path, field string, names []string) *Error {
	if path == "" {
		return Errorf(CodeInvalidRequest, "field '%s' is not known; this action takes %s", field, strings.Join(names, ", "))
	}
	return Errorf(CodeInvalidRequest, "field '%s%s' is not known; '%s' takes %s", path, field, strings.TrimSuffix(path, "."), strings.Join(names, ", "))
}

func decodeError(err error, v any, names []string) *Error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return Errorf(CodeInvalidRequest, "the payload must be a JSON object")
		}
		return Errorf(CodeInvalidRequest, "field '%s' must be %s, not %s", jsonPath(typeErr.Field, v), jsonKind(typeErr.Type), typeErr.Value)
	case errors.As(err, &syntaxErr):
		return Errorf(CodeInvalidRequest, "the payload is not valid JSON: %v", err)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return unknownField("", strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`), names)
	}
	return Errorf(CodeInvalidRequest, "the payload is not valid JSON: %v", err)
}

// jsonPath drops the Go names of v's embedded structs (Timing.expire_s) from a field path.
func jsonPath(field string, v any) string {
	embedded := map[string]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		for i := range t.NumField() {
			if f := t.Field(i); f.Anonymous && f.Type.Kind() == reflect.Struct {
				embedded[f.Name] = true
				walk(f.Type)
			}
		}
	}
	walk(reflect.TypeOf(v))
	for {
		head, rest, ok := strings.Cut(field, ".")
		if !ok || !embedded[head] {
			return field
		}
		field = rest
	}
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Uint, reflect.Uint64:
		return "a whole number"
	case reflect.Float64:
		return "a number"
	case reflect.Slice:
		return "a list"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "an object"
}

// structFields are the JSON names of a struct's fields (those of embedded structs included, in
// declaration order) and the type each decodes into. A field tagged `wire:"own"` is the bridge's
// own: it is kept in the outbox row (read back with encoding/json), and a request from MQTT that
// names it is refused like one with an unknown field.
type structFields struct {
	names []string
	types map[string]reflect.Type
}

// fieldsByType caches fieldsOf.
var fieldsByType sync.Map

// fieldsOf returns the fields of struct type t.
func fieldsOf(t reflect.Type) *structFields {
	if f, ok := fieldsByType.Load(t); ok {
		return f.(*structFields)
	}
	f := &structFields{types: map[string]reflect.Type{}}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			field := t.Field(i)
			if field.Anonymous && field.Type.Kind() == reflect.Struct {
				walk(field.Type)
				continue
			}
			if !field.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(field.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = field.Name
			}
			if field.Tag.Get("wire") == "own" {
				continue
			}
			f.names = append(f.names, name)
			f.types[name] = field.Type
		}
	}
	walk(t)
	fieldsByType.Store(t, f)
	return f
}

// FieldNames lists the JSON names of a request struct's fields (v is a pointer to it), those of
// embedded structs included, in declaration order.
func FieldNames(v any) []string {
	return fieldsOf(derefType(reflect.TypeOf(v))).names
}
