package zmqchan

// This file is the CURVE side of the package: key types, key files and the
// server's ZAP decision. See "# Authentication" in doc.go.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/pebbe/zmq4"
)

// CurveKeyLen is the length of a CURVE key in Z85 text: 32 bytes, 40
// characters.
const CurveKeyLen = 40

// CurveServer makes a Server a CURVE server (ServerConfig.Curve).
type CurveServer struct {
	// Secret is the server's secret key, Z85 (40 characters). The public
	// key, which clients need, is derived from it (Server.CurvePublic).
	Secret string
	// Allow lists the Z85 public keys of the clients admitted. Every other
	// client is refused during the CURVE handshake, before any request of
	// it reaches the server. Listen refuses an empty list.
	Allow []string
}

// CurveClient makes Fetch a CURVE client (WithCurve).
type CurveClient struct {
	// ServerPublic is the prefill server's public key, Z85 (its .pub file).
	ServerPublic string
	// Public and Secret are the client's key pair, Z85. Public may be left
	// empty: it is then derived from Secret.
	Public, Secret string
}

// CurveKey is a CURVE key pair in Z85 text.
type CurveKey struct {
	Public, Secret string
}

// Client returns the CurveClient that uses k to talk to the server whose
// public key is serverPublic.
func (k CurveKey) Client(serverPublic string) CurveClient {
	return CurveClient{ServerPublic: serverPublic, Public: k.Public, Secret: k.Secret}
}

// WithCurve makes Fetch authenticate with CURVE: the connection is
// encrypted, the server must hold the secret key of c.ServerPublic, and the
// server must have c.Public in its allow-list. A refused handshake fails
// with an *UnauthenticatedError (ErrUnauthenticated).
func WithCurve(c CurveClient) FetchOption {
	return func(o *fetchOptions) { o.curve = &c }
}

// GenerateCurveKey returns a new random CURVE key pair.
func GenerateCurveKey() (CurveKey, error) {
	if err := checkHasCurve(); err != nil {
		return CurveKey{}, err
	}
	pub, sec, err := zmq4.NewCurveKeypair()
	if err != nil {
		return CurveKey{}, fmt.Errorf("zmqchan: generate CURVE key pair: %w", err)
	}
	return CurveKey{Public: pub, Secret: sec}, nil
}

// CurvePublicKey derives the Z85 public key of a Z85 secret key.
func CurvePublicKey(secret string) (string, error) {
	if err := CheckCurveKey(secret); err != nil {
		return "", fmt.Errorf("zmqchan: CURVE secret key: %w", err)
	}
	if err := checkHasCurve(); err != nil {
		return "", err
	}
	pub, err := zmq4.AuthCurvePublic(secret)
	if err != nil {
		return "", fmt.Errorf("zmqchan: derive CURVE public key: %w", err)
	}
	return pub, nil
}

func checkHasCurve() error {
	if !zmq4.HasCurve() {
		return errors.New("zmqchan: this libzmq was built without CURVE support (libsodium); install a libzmq with CURVE or run without authentication")
	}
	return nil
}

// CheckCurveKey reports whether key is a CURVE key in Z85 text: exactly 40
// characters of the Z85 alphabet, each group of 5 encoding a 32-bit value.
// The error does not repeat the key (it may be a secret one).
func CheckCurveKey(key string) error {
	if len(key) != CurveKeyLen {
		return fmt.Errorf("%d characters, want %d (a Z85 CURVE key)", len(key), CurveKeyLen)
	}
	if _, err := z85Decode(key); err != nil {
		return err
	}
	return nil
}

// LoadCurveKey reads a secret key file: the Z85 secret key (40 characters)
// on one line, optionally with '#' comment lines and blank lines around it
// (see doc.go for the exact rules). It derives the public key. The file
// must not be readable or writable by group or others: LoadCurveKey
// refuses it with an error that says to chmod 600 it.
func LoadCurveKey(path string) (CurveKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return CurveKey{}, fmt.Errorf("zmqchan: CURVE secret key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return CurveKey{}, fmt.Errorf("zmqchan: CURVE secret key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return CurveKey{}, fmt.Errorf("zmqchan: CURVE secret key file %s is accessible by group or others (mode %#o); run chmod 600 %s", path, perm, path)
	}
	keys, err := readKeyFile(path)
	if err != nil {
		return CurveKey{}, err
	}
	if len(keys) != 1 {
		return CurveKey{}, fmt.Errorf("zmqchan: CURVE secret key file %s holds %d keys, want exactly 1", path, len(keys))
	}
	pub, err := CurvePublicKey(keys[0])
	if err != nil {
		return CurveKey{}, fmt.Errorf("%s: %w", path, err)
	}
	return CurveKey{Public: pub, Secret: keys[0]}, nil
}

// LoadCurvePublic reads a public key file (as written next to a secret key
// file, PREFIX.pub): exactly one Z85 key, same rules as LoadAllowList.
func LoadCurvePublic(path string) (string, error) {
	keys, err := readKeyFile(path)
	if err != nil {
		return "", err
	}
	if len(keys) != 1 {
		return "", fmt.Errorf("zmqchan: CURVE public key file %s holds %d keys, want exactly 1", path, len(keys))
	}
	return keys[0], nil
}

// LoadAllowList reads an allow-list file: one Z85 public key per line.
// Blank lines and lines starting with '#' are comments, as is anything
// after whitespace following a key ("KEY  # decode-3"). ('#' is a Z85
// character, but it cannot start a valid key: a group of 5 characters
// starting with it would exceed 32 bits.) Any other line is an error naming
// the file and line. An allow-list file with no key is an error too.
func LoadAllowList(path string) ([]string, error) {
	keys, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("zmqchan: CURVE allow-list %s lists no key: every client would be refused", path)
	}
	return keys, nil
}

// LoadCurveServer reads a server's secret key file (LoadCurveKey) and its
// allow-list file (LoadAllowList).
func LoadCurveServer(secretKeyPath, allowListPath string) (*CurveServer, error) {
	k, err := LoadCurveKey(secretKeyPath)
	if err != nil {
		return nil, err
	}
	allow, err := LoadAllowList(allowListPath)
	if err != nil {
		return nil, err
	}
	return &CurveServer{Secret: k.Secret, Allow: allow}, nil
}

// readKeyFile returns the keys of a key file, one per line; see
// LoadAllowList for the rules. Errors name the file and the line, never the
// content of the line (it may be a secret key).
func readKeyFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("zmqchan: CURVE key file: %w", err)
	}
	var keys []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		commentAfter := len(fields) == 1 || strings.HasPrefix(fields[1], "#")
		if CheckCurveKey(fields[0]) == nil && commentAfter {
			keys = append(keys, fields[0])
			continue
		}
		if strings.HasPrefix(fields[0], "#") {
			continue
		}
		if !commentAfter {
			return nil, fmt.Errorf("zmqchan: %s:%d: want one Z85 key per line, optionally followed by a '#' comment", path, n)
		}
		return nil, fmt.Errorf("zmqchan: %s:%d: not a CURVE key: %w", path, n, CheckCurveKey(fields[0]))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("zmqchan: read %s: %w", path, err)
	}
	return keys, nil
}

// validate checks a server's CURVE configuration and returns its public key
// and the allow-list as a set.
func (c *CurveServer) validate() (public string, allow map[string]bool, err error) {
	public, err = CurvePublicKey(c.Secret)
	if err != nil {
		return "", nil, fmt.Errorf("zmqchan: ServerConfig.Curve.Secret: %w", err)
	}
	if len(c.Allow) == 0 {
		return "", nil, errors.New("zmqchan: ServerConfig.Curve.Allow is empty: every client would be refused; list the public keys of the decode instances")
	}
	allow = make(map[string]bool, len(c.Allow))
	for i, k := range c.Allow {
		if err := CheckCurveKey(k); err != nil {
			return "", nil, fmt.Errorf("zmqchan: ServerConfig.Curve.Allow[%d]: %w", i, err)
		}
		allow[k] = true
	}
	return public, allow, nil
}

// resolve checks a client's CURVE configuration, deriving Public when empty.
func (c CurveClient) resolve() (CurveClient, error) {
	if err := CheckCurveKey(c.ServerPublic); err != nil {
		return c, fmt.Errorf("zmqchan: CurveClient.ServerPublic: %w", err)
	}
	pub, err := CurvePublicKey(c.Secret)
	if err != nil {
		return c, fmt.Errorf("zmqchan: CurveClient.Secret: %w", err)
	}
	if c.Public == "" {
		c.Public = pub
	} else if c.Public != pub {
		return c, fmt.Errorf("zmqchan: CurveClient.Public %s is not the public key of CurveClient.Secret (that is %s); load both from the same key file", c.Public, pub)
	}
	return c, nil
}

// ZAP (ZeroMQ RFC 27) status codes.
const (
	zapOK     = "200"
	zapDenied = "400"
	zapError  = "500"
)

// zapDecide answers one ZAP request (frames: version, request id, domain,
// address, identity, mechanism, credentials...) with the reply frames
// (version, request id, status code, status text, user id, metadata).
// It admits CURVE clients of the server's domain whose key is allowed.
func (s *Server) zapDecide(msg [][]byte) [][]byte {
	reply := func(code, text, user string) [][]byte {
		id := []byte{}
		if len(msg) > 1 {
			id = msg[1]
		}
		return [][]byte{[]byte("1.0"), id, []byte(code), []byte(text), []byte(user), {}}
	}
	if len(msg) < 6 || string(msg[0]) != "1.0" {
		s.log.Error("zmqchan: malformed ZAP request", "frames", len(msg))
		return reply(zapError, "malformed ZAP request", "")
	}
	domain, addr, mech := string(msg[2]), string(msg[3]), string(msg[5])
	switch {
	case domain != s.zapDomain:
		return reply(zapDenied, "unknown ZAP domain", "")
	case mech != "CURVE" || len(msg) != 7 || len(msg[6]) != 32:
		s.warn(warnAuth, "zmqchan: client refused: not a CURVE client", "client_addr", addr, "mechanism", mech)
		return reply(zapDenied, "CURVE required", "")
	}
	key := z85Encode(msg[6])
	if !s.curveAllow[key] {
		s.warn(warnAuth, "zmqchan: CURVE client refused: public key not in the allow-list",
			"client_addr", addr, "client_key", key)
		return reply(zapDenied, "client key not allowed", "")
	}
	s.log.Debug("zmqchan: CURVE client admitted", "client_addr", addr, "client_key", key)
	return reply(zapOK, "OK", key)
}

const z85Alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"

var z85Index = func() (t [256]int16) {
	for i := range t {
		t[i] = -1
	}
	for i := range len(z85Alphabet) {
		t[z85Alphabet[i]] = int16(i)
	}
	return t
}()

// z85Decode decodes Z85 text (ZeroMQ RFC 32) whose length is a multiple of
// 5. Errors give positions, not characters.
func z85Decode(s string) ([]byte, error) {
	if len(s)%5 != 0 {
		return nil, fmt.Errorf("Z85 text of %d characters, not a multiple of 5", len(s))
	}
	out := make([]byte, 0, len(s)/5*4)
	for i := 0; i < len(s); i += 5 {
		var v uint64
		for j := i; j < i+5; j++ {
			d := z85Index[s[j]]
			if d < 0 {
				return nil, fmt.Errorf("character %d is not in the Z85 alphabet", j+1)
			}
			v = v*85 + uint64(d)
		}
		if v > 1<<32-1 {
			return nil, fmt.Errorf("characters %d-%d do not encode a 32-bit value: not Z85", i+1, i+5)
		}
		out = append(out, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	return out, nil
}

// z85Encode encodes b, whose length is a multiple of 4, as Z85 text.
func z85Encode(b []byte) string {
	out := make([]byte, 0, len(b)/4*5)
	for i := 0; i+4 <= len(b); i += 4 {
		v := uint32(b[i])<<24 | uint32(b[i+1])<<16 | uint32(b[i+2])<<8 | uint32(b[i+3])
		var g [5]byte
		for j := 4; j >= 0; j-- {
			g[j] = z85Alphabet[v%85]
			v /= 85
		}
		out = append(out, g[:]...)
	}
	return string(out)
}
