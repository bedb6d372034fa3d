package grant

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Sentinel errors.
var (
	// ErrMalformed: remote_grant does not decode.
	ErrMalformed = errors.New("grant: malformed remote_grant")
	// ErrUnsigned: the grant carries no MAC and this instance has a
	// cluster key.
	ErrUnsigned = errors.New("grant: remote_grant is not signed")
	// ErrForged: the grant's MAC does not verify under the cluster key.
	ErrForged = errors.New("grant: remote_grant does not verify")
	// ErrMismatch: a kv_transfer_params field or the prompt differs from
	// what the grant binds.
	ErrMismatch = errors.New("grant: kv_transfer_params do not match the grant")
	// ErrKey: the cluster key file is unusable.
	ErrKey = errors.New("grant: bad cluster key")
)

// FieldError names the kv_transfer_params field (or "prompt") whose value
// differs from the grant's; it wraps ErrMismatch.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%v: %s: %s", ErrMismatch, e.Field, e.Msg)
}

func (e *FieldError) Unwrap() error { return ErrMismatch }

// Limits of a grant's encoding (a decoder refuses more).
const (
	MaxString   = 256
	MaxGroups   = 256
	MaxBlockIDs = 1 << 20 // in total
	// MaxEncoded bounds remote_grant's length.
	MaxEncoded = 16 << 20
)

// Grant is what P grants D for one request: the kv_transfer_params
// fields it binds, a random token and the prompt's hash.
type Grant struct {
	Params
	// Token is the random handle of the grant in control messages (never 0).
	Token uint64
	// Prompt is PromptHash of the request's prompt tokens.
	Prompt [32]byte
}

// PromptHash is the SHA-256 of the token ids, little-endian uint32 each.
func PromptHash(tokens []uint32) [32]byte {
	h := sha256.New()
	var b [4]byte
	for _, t := range tokens {
		binary.LittleEndian.PutUint32(b[:], t)
		h.Write(b[:])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Key is the cluster key: every instance of a cluster holds the same one.
type Key struct{ b []byte }

// MinKeyBytes is the shortest key accepted.
const MinKeyBytes = 32

// NewKey returns a key of raw bytes (at least MinKeyBytes).
func NewKey(raw []byte) (*Key, error) {
	if len(raw) < MinKeyBytes {
		return nil, fmt.Errorf("%w: %d bytes, need at least %d", ErrKey, len(raw), MinKeyBytes)
	}
	return &Key{b: append([]byte(nil), raw...)}, nil
}

// RandomKey returns a fresh random key (tests and `hybridxfer keys`).
func RandomKey() *Key {
	b := make([]byte, MinKeyBytes)
	_, _ = rand.Read(b)
	return &Key{b: b}
}

// Hex is the key as its file holds it.
func (k *Key) Hex() string { return hex.EncodeToString(k.b) }

// LoadKey reads a cluster key file: hex of at least 32 bytes on one line
// (surrounding white space ignored), readable by its owner only.
func LoadKey(path string) (*Key, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s is readable by others (mode %v): chmod 600 %s", ErrKey, path, st.Mode().Perm(), path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: not hex (write one with `hybridxfer keys cluster --out %s`): %v", ErrKey, path, path, err)
	}
	k, err := NewKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return k, nil
}

func (k *Key) mac(domain string, msg []byte) []byte {
	m := hmac.New(sha256.New, k.b)
	m.Write([]byte(domain))
	m.Write([]byte{0})
	m.Write(msg)
	return m.Sum(nil)
}

// InternalToken is the secret instances accept on their internal
// endpoints (kv_transfer_params, /v1/kv/abort) from the cluster's proxy.
func (k *Key) InternalToken() string {
	return hex.EncodeToString(k.mac("hybridxfer internal api v1", nil))
}

// TokenEqual compares two secrets in constant time.
func TokenEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

const (
	magic0, magic1, magic2 = 'H', 'X', 'G'
	version                = 1
	macDomain              = "hybridxfer grant v1"
)

// Seal encodes g and, with a key, signs it: the remote_grant string.
func Seal(g *Grant, k *Key) string {
	body := encode(g)
	if k != nil {
		body[4] = 1
		body = append(body, k.mac(macDomain, body)...)
	}
	return base64.RawURLEncoding.EncodeToString(body)
}

func encode(g *Grant) []byte {
	b := []byte{magic0, magic1, magic2, version, 0}
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	str(g.EngineID)
	str(g.BootID)
	b = binary.AppendUvarint(b, uint64(g.DP))
	str(g.Host)
	b = binary.AppendUvarint(b, uint64(g.Port))
	b = binary.AppendUvarint(b, uint64(g.TP))
	str(g.ReqID)
	b = binary.LittleEndian.AppendUint64(b, g.Token)
	b = binary.AppendUvarint(b, uint64(g.NumTokens))
	str(g.Handoff)
	if g.FirstToken != nil {
		b = append(b, 1)
		b = binary.AppendUvarint(b, uint64(*g.FirstToken))
	} else {
		b = append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(g.BlockIDs)))
	for _, ids := range g.BlockIDs {
		b = binary.AppendUvarint(b, uint64(len(ids)))
		for _, id := range ids {
			b = binary.AppendVarint(b, int64(id))
		}
	}
	b = binary.AppendVarint(b, g.Expiry)
	return append(b, g.Prompt[:]...)
}

// Open decodes a remote_grant. With a key it must carry a MAC that
// verifies; without one a MAC is not checked (it cannot be).
func Open(s string, k *Key) (*Grant, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrMalformed)
	}
	if len(s) > MaxEncoded {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrMalformed, len(s), MaxEncoded)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s) // Strict: one spelling per grant (no slack in the last character's spare bits)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64url: %v", ErrMalformed, err)
	}
	if len(b) < 5 || b[0] != magic0 || b[1] != magic1 || b[2] != magic2 {
		return nil, fmt.Errorf("%w: no grant magic", ErrMalformed)
	}
	if b[3] != version {
		return nil, fmt.Errorf("%w: version %d, this build reads %d", ErrMalformed, b[3], version)
	}
	body := b
	switch b[4] {
	case 0:
		if k != nil {
			return nil, fmt.Errorf("%w: this instance has a cluster key; give the prefill instances the same --cluster-key-file", ErrUnsigned)
		}
	case 1:
		if len(b) < 5+sha256.Size {
			return nil, fmt.Errorf("%w: truncated MAC", ErrMalformed)
		}
		body = b[:len(b)-sha256.Size]
		if k != nil && !hmac.Equal(b[len(b)-sha256.Size:], k.mac(macDomain, body)) {
			return nil, fmt.Errorf("%w: forged, altered, or sealed with another cluster key", ErrForged)
		}
	default:
		return nil, fmt.Errorf("%w: flags %d", ErrMalformed, b[4])
	}
	g, err := decode(body[5:])
	if err != nil {
		return nil, err
	}
	return g, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrMalformed, what)
	}
}

func (r *reader) uvarint(limit uint64, what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || v > limit {
		r.fail("bad " + what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad " + what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) str(what string) string {
	n := r.uvarint(MaxString, what)
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.fail("truncated " + what)
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) bytes(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.fail("truncated " + what)
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

const maxInt32 = 1<<31 - 1

func decode(b []byte) (*Grant, error) {
	r := &reader{b: b}
	g := &Grant{}
	g.EngineID = r.str("engine id")
	g.BootID = r.str("boot id")
	g.DP = int(r.uvarint(maxInt32, "dp rank"))
	g.Host = r.str("host")
	g.Port = int(r.uvarint(65535, "port"))
	g.TP = int(r.uvarint(maxInt32, "tp size"))
	g.ReqID = r.str("request id")
	if t := r.bytes(8, "token"); t != nil {
		g.Token = binary.LittleEndian.Uint64(t)
	}
	g.NumTokens = int(r.uvarint(maxInt32, "num tokens"))
	g.Handoff = r.str("handoff")
	switch f := r.bytes(1, "first token flag"); {
	case f == nil:
	case f[0] == 1:
		v := uint32(r.uvarint(1<<32-1, "first token"))
		g.FirstToken = &v
	case f[0] != 0:
		r.fail("first token flag")
	}
	ng := r.uvarint(MaxGroups, "group count")
	total := 0
	for i := uint64(0); i < ng && r.err == nil; i++ {
		n := r.uvarint(MaxBlockIDs, "block count")
		if total += int(n); total > MaxBlockIDs || n > uint64(len(r.b)) { // each id takes a byte at least
			r.fail("block count")
			break
		}
		ids := make([]int, n)
		for j := range ids {
			v := r.varint("block id")
			if v < -maxInt32-1 || v > maxInt32 {
				r.fail("block id range")
			}
			ids[j] = int(v)
		}
		g.BlockIDs = append(g.BlockIDs, ids)
	}
	g.Expiry = r.varint("expiry")
	if p := r.bytes(32, "prompt hash"); p != nil {
		copy(g.Prompt[:], p)
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(r.b))
	}
	if g.Token == 0 {
		return nil, fmt.Errorf("%w: token 0", ErrMalformed)
	}
	return g, nil
}
