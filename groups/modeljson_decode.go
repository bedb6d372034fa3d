package groups

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// A small strict JSON reader shared by ParseModelJSON and ParseHFConfig.
// encoding/json alone cannot do what both need: reject duplicated keys,
// report unknown fields and type errors with their full path, and tell an
// integer from a float. jsonObj keeps one object's members as raw values and
// decodes them on demand, so every error carries the path of the field.

// jsonObj is one decoded JSON object.
type jsonObj struct {
	path string
	keys []string // in document order
	vals map[string]json.RawMessage
	// lenient: a null member counts as absent (Hugging Face configs write
	// "head_dim": null and the like). Our own format is not lenient.
	lenient bool
}

func jsonPath(base, key string) string {
	if base == "" {
		return key
	}
	return base + "." + key
}

func jsonIndex(base string, i int) string { return base + "[" + strconv.Itoa(i) + "]" }

// jsonKind names the JSON type of a raw value, for error messages.
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func isJSONNull(raw json.RawMessage) bool { return jsonKind(raw) == "null" }

// decodeJSONDocument checks that data is one JSON value and nothing else
// (trailing data is an error) and returns it.
func decodeJSONDocument(data []byte, limit int, what string) (json.RawMessage, error) {
	if len(data) > limit {
		return nil, fmt.Errorf("%w: %s of %d bytes exceeds the limit of %d bytes", ErrInvalidSpec, what, len(data), limit)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: %s: empty input", ErrInvalidSpec, what)
		}
		return nil, fmt.Errorf("%w: %s: invalid JSON: %v", ErrInvalidSpec, what, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %s: trailing data after the JSON value at offset %d", ErrInvalidSpec, what, dec.InputOffset())
	}
	return raw, nil
}

// decodeJSONObj decodes raw, which must be an object, into its members.
// A duplicated key is an error naming it.
func decodeJSONObj(raw json.RawMessage, path string, lenient bool) (*jsonObj, error) {
	if k := jsonKind(raw); k != "an object" {
		if path == "" {
			return nil, fmt.Errorf("%w: the document must be a JSON object, got %s", ErrInvalidSpec, k)
		}
		return nil, fieldErr(path, "must be an object, got "+k)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil { // '{'
		return nil, fieldErr(path, "invalid JSON: "+err.Error())
	}
	o := &jsonObj{path: path, vals: map[string]json.RawMessage{}, lenient: lenient}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fieldErr(path, "invalid JSON: "+err.Error())
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fieldErr(path, "invalid JSON: object key is not a string")
		}
		if _, dup := o.vals[key]; dup {
			return nil, fieldErr(jsonPath(path, key), "duplicated key")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fieldErr(jsonPath(path, key), "invalid JSON: "+err.Error())
		}
		o.keys = append(o.keys, key)
		o.vals[key] = v
	}
	return o, nil
}

// only reports the first member (in document order) not in known.
func (o *jsonObj) only(known ...string) error {
	for _, k := range o.keys {
		found := false
		for _, n := range known {
			if k == n {
				found = true
				break
			}
		}
		if !found {
			return fieldErr(jsonPath(o.path, k), "unknown field")
		}
	}
	return nil
}

func (o *jsonObj) field(key string) string { return jsonPath(o.path, key) }

// get returns a member's raw value; a null member of a lenient object is
// absent, a null member of a strict one is an error.
func (o *jsonObj) get(key string) (json.RawMessage, bool, error) {
	v, ok := o.vals[key]
	if !ok {
		return nil, false, nil
	}
	if isJSONNull(v) {
		if o.lenient {
			return nil, false, nil
		}
		return nil, false, fieldErr(o.field(key), "must not be null")
	}
	return v, true, nil
}

func (o *jsonObj) has(key string) bool {
	_, ok, err := o.get(key)
	return ok || err != nil
}

func jsonStringValue(raw json.RawMessage, path string) (string, error) {
	if k := jsonKind(raw); k != "a string" {
		return "", fieldErr(path, "must be a string, got "+k)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fieldErr(path, "invalid string: "+err.Error())
	}
	return s, nil
}

func jsonIntValue(raw json.RawMessage, path string) (int, error) {
	if k := jsonKind(raw); k != "a number" {
		return 0, fieldErr(path, "must be an integer, got "+k)
	}
	s := string(bytes.TrimSpace(raw))
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			return 0, fieldErr(path, "integer "+s+" out of range")
		}
		return 0, fieldErr(path, "must be an integer, got "+s)
	}
	if v < math.MinInt || v > math.MaxInt {
		return 0, fieldErr(path, "integer "+s+" out of range")
	}
	return int(v), nil
}

func (o *jsonObj) str(key string) (string, bool, error) {
	v, ok, err := o.get(key)
	if !ok || err != nil {
		return "", ok, err
	}
	s, err := jsonStringValue(v, o.field(key))
	return s, err == nil, err
}

func (o *jsonObj) integer(key string) (int, bool, error) {
	v, ok, err := o.get(key)
	if !ok || err != nil {
		return 0, ok, err
	}
	n, err := jsonIntValue(v, o.field(key))
	return n, err == nil, err
}

func (o *jsonObj) boolean(key string) (bool, bool, error) {
	v, ok, err := o.get(key)
	if !ok || err != nil {
		return false, ok, err
	}
	switch jsonKind(v) {
	case "a boolean":
		return bytes.HasPrefix(bytes.TrimSpace(v), []byte("true")), true, nil
	}
	return false, false, fieldErr(o.field(key), "must be a boolean, got "+jsonKind(v))
}

func (o *jsonObj) object(key string) (*jsonObj, bool, error) {
	v, ok, err := o.get(key)
	if !ok || err != nil {
		return nil, ok, err
	}
	c, err := decodeJSONObj(v, o.field(key), o.lenient)
	return c, err == nil, err
}

// array returns the elements of an array member, refusing more than max.
func (o *jsonObj) array(key string, max int) ([]json.RawMessage, bool, error) {
	v, ok, err := o.get(key)
	if !ok || err != nil {
		return nil, ok, err
	}
	a, err := jsonArrayValue(v, o.field(key), max)
	return a, err == nil, err
}

func jsonArrayValue(raw json.RawMessage, path string, max int) ([]json.RawMessage, error) {
	if k := jsonKind(raw); k != "an array" {
		return nil, fieldErr(path, "must be an array, got "+k)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil { // '['
		return nil, fieldErr(path, "invalid JSON: "+err.Error())
	}
	var out []json.RawMessage
	for dec.More() {
		if len(out) >= max {
			return nil, fieldErr(path, fmt.Sprintf("more than %d elements", max))
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fieldErr(jsonIndex(path, len(out)), "invalid JSON: "+err.Error())
		}
		out = append(out, v)
	}
	return out, nil
}

// checkName checks a free-form name (model, architecture, layer, segment,
// state): at most max bytes of valid UTF-8 without control characters, so
// that it survives a JSON round trip and prints safely.
func checkName(field, s string, max int) error {
	if len(s) > max {
		return fieldErr(field, fmt.Sprintf("longer than %d bytes", max))
	}
	if !utf8.ValidString(s) {
		return fieldErr(field, "not valid UTF-8")
	}
	if i := strings.IndexFunc(s, unicode.IsControl); i >= 0 {
		return fieldErr(field, fmt.Sprintf("control character at byte %d", i))
	}
	return nil
}

// isNull reports whether key is present with the value null (a lenient
// object otherwise treats it as absent).
func (o *jsonObj) isNull(key string) bool {
	v, ok := o.vals[key]
	return ok && isJSONNull(v)
}
