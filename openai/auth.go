package openai

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// Authentication of the HTTP API (docs/security.md, "API keys and the
// internal endpoints").
//
// API keys (HandlerOptions.APIKeys, ProxyOptions.APIKeys): when set, every
// request but GET /health and GET /metrics must carry
// "Authorization: Bearer KEY" with one of the keys; anything else is a 401
// (code invalid_api_key, header WWW-Authenticate: Bearer). /health and
// /metrics stay open on purpose: load balancers and Prometheus scrape them
// without credentials, and they carry no request data. Put the instances
// and the proxy behind a network boundary if their metrics are sensitive.
//
// Internal token (HandlerOptions.InternalToken, ProxyOptions.InternalToken):
// a secret shared by the cluster (derived from the cluster key). The proxy
// sends it as HeaderInternal on every request it makes to an instance. An
// instance with a token accepts kv_transfer_params (either the
// do_remote_decode request to P or P's params to D) and POST /v1/kv/abort
// only with it (else 403, code internal_only), and a request with a valid
// token needs no API key: the proxy authenticated its client itself and
// never forwards the client's Authorization header. An instance without a
// token accepts kv_transfer_params from anyone who passes its API keys
// (a standalone instance, or a test set-up). Instances with API keys
// behind a proxy need the token: the proxy presents no API key upstream.
//
// Every comparison is constant time: the presented secret and every
// configured one are hashed with SHA-256 and compared with
// crypto/subtle, against all keys, without an early exit.

// HeaderInternal carries the cluster's internal token from the proxy to
// the instances.
const HeaderInternal = "X-Hybridxfer-Internal"

// MinAPIKeyLen is the shortest key LoadAPIKeys accepts.
const MinAPIKeyLen = 16

// maxAPIKeyFileBytes bounds an API key file.
const maxAPIKeyFileBytes = 1 << 20

// LoadAPIKeys reads an API key file: one key per line; blank lines and
// lines starting with '#' are ignored; surrounding white space is trimmed.
// It refuses a file that is readable or writable by its group or by
// others (chmod 600), that is not a regular file, that holds no key, or
// a key shorter than MinAPIKeyLen or with characters other than visible
// ASCII. Errors name the file and the line, never a key. Duplicates are
// dropped.
func LoadAPIKeys(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("openai: API key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("openai: API key file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("openai: API key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("openai: API key file %s has mode %04o: it must not be accessible to group or others (chmod 600 %s)",
			path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxAPIKeyFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("openai: API key file %s: %w", path, err)
	}
	if len(data) > maxAPIKeyFileBytes {
		return nil, fmt.Errorf("openai: API key file %s exceeds %d bytes", path, maxAPIKeyFileBytes)
	}
	var keys []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxAPIKeyFileBytes)
	for line := 1; sc.Scan(); line++ {
		k := strings.TrimSpace(sc.Text())
		if k == "" || strings.HasPrefix(k, "#") {
			continue
		}
		if len(k) < MinAPIKeyLen {
			return nil, fmt.Errorf("openai: API key file %s line %d: key of %d characters, want at least %d",
				path, line, len(k), MinAPIKeyLen)
		}
		for i := 0; i < len(k); i++ {
			if k[i] <= ' ' || k[i] > '~' {
				return nil, fmt.Errorf("openai: API key file %s line %d: a key must be visible ASCII characters without spaces",
					path, line)
			}
		}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("openai: API key file %s: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("openai: API key file %s holds no key (one per line; '#' starts a comment)", path)
	}
	return keys, nil
}

// authenticator checks a request's API key and internal token.
type Authenticator struct {
	keys        [][sha256.Size]byte // the API keys' digests; none: no API key needed
	internal    [sha256.Size]byte   // the internal token's digest
	hasInternal bool
}

func NewAuthenticator(keys []string, internal string) *Authenticator {
	a := &Authenticator{}
	for _, k := range keys {
		a.keys = append(a.keys, sha256.Sum256([]byte(k)))
	}
	if internal != "" {
		a.internal, a.hasInternal = sha256.Sum256([]byte(internal)), true
	}
	return a
}

// matches reports, in constant time over all of set, whether secret is in
// set. An empty secret never matches.
func matches(secret string, set [][sha256.Size]byte) bool {
	d := sha256.Sum256([]byte(secret))
	ok := 0
	for i := range set {
		ok |= subtle.ConstantTimeCompare(d[:], set[i][:])
	}
	return ok == 1 && secret != ""
}

// internalOK reports whether r carries the internal token (exactly one
// HeaderInternal). Without a configured token nothing is internal.
func (a *Authenticator) internalOK(r *http.Request) bool {
	v := r.Header.Values(HeaderInternal)
	return a.hasInternal && len(v) == 1 && matches(v[0], [][sha256.Size]byte{a.internal})
}

// bearer returns the token of r's only Authorization header, when it is
// "Bearer TOKEN" (the scheme in any case).
func bearer(r *http.Request) (string, bool) {
	v := r.Header.Values("Authorization")
	if len(v) != 1 {
		return "", false
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(v[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// openPath reports whether path is served without credentials.
func openPath(path string) bool { return path == "/health" || path == "/metrics" }

// errAPIKey is the 401 of a request without a valid API key.
func errAPIKey(missing bool) *APIError {
	msg := "invalid API key: send Authorization: Bearer KEY with one of this server's API keys"
	if missing {
		msg = "missing API key: send Authorization: Bearer KEY"
	}
	return &APIError{
		Status:  http.StatusUnauthorized,
		Message: msg,
		Type:    "invalid_request_error",
		Code:    "invalid_api_key",
	}
}

// errInternalOnly is the 403 of kv_transfer_params (param
// "kv_transfer_params") or of an internal path such as POST /v1/kv/abort
// or POST /admin/drain (param "", path r's) without the internal token.
func errInternalOnly(r *http.Request, param string) *APIError {
	msg := "kv_transfer_params are accepted only from the cluster's proxy (" + HeaderInternal + ")"
	if param == "" {
		msg = r.Method + " " + r.URL.Path + " is accepted only with the cluster's internal token (" + HeaderInternal + ")"
	}
	return &APIError{
		Status:  http.StatusForbidden,
		Message: msg,
		Type:    "invalid_request_error",
		Param:   param,
		Code:    "internal_only",
	}
}

// protect wraps next: with API keys configured, every path but /health
// and /metrics needs a valid key, or (acceptInternal) the internal token.
// Without keys it returns next.
func (a *Authenticator) Protect(next http.Handler, acceptInternal bool) http.Handler {
	if len(a.keys) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if openPath(r.URL.Path) || (acceptInternal && a.internalOK(r)) {
			next.ServeHTTP(w, r)
			return
		}
		tok, ok := bearer(r)
		if !matches(tok, a.keys) || !ok {
			w.Header().Set("WWW-Authenticate", "Bearer")
			WriteError(w, errAPIKey(r.Header.Get("Authorization") == ""))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// requireInternal is nil when the instance has no internal token or r
// carries it; else the 403 naming param.
func (a *Authenticator) requireInternal(r *http.Request, param string) *APIError {
	if !a.hasInternal || a.internalOK(r) {
		return nil
	}
	return errInternalOnly(r, param)
}
