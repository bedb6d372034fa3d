package zmqchan

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pebbe/zmq4"
)

// refuseTimeout bounds fetches that must be refused: a refusal is reported
// as soon as the handshake fails, so this is only reached by a broken
// refusal (which then fails the test as a timeout).
const refuseTimeout = 5 * time.Second

func newKey(t testing.TB) CurveKey {
	t.Helper()
	k, err := GenerateCurveKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// startCurveServer starts a CURVE server that admits the given client keys.
func startCurveServer(t *testing.T, allow ...string) (*testServer, CurveKey) {
	t.Helper()
	sk := newKey(t)
	ts := startServer(t, nil, func(c *ServerConfig) {
		c.Curve = &CurveServer{Secret: sk.Secret, Allow: allow}
	})
	return ts, sk
}

func TestCurveAllowedClient(t *testing.T) {
	client, other := newKey(t), newKey(t)
	ts, sk := startCurveServer(t, other.Public, client.Public)
	if ts.CurvePublic() != sk.Public {
		t.Fatalf("CurvePublic %q, want %q", ts.CurvePublic(), sk.Public)
	}
	for _, rank := range []int{0, RankAll} {
		rep, err := Fetch(context.Background(), ts.endpoint(), req(rank), WithTimeout(okTimeout),
			WithCurve(client.Client(ts.CurvePublic())))
		if err != nil {
			t.Fatalf("rank %d: %v", rank, err)
		}
		if want := rankPayload(rank, "decode-0"); !bytes.Equal(rep.Payload, want) {
			t.Errorf("rank %d: payload %q, want %q", rank, rep.Payload, want)
		}
	}
	// Public may be left out: it is derived from Secret.
	if _, err := Fetch(context.Background(), ts.endpoint(), req(1), WithTimeout(okTimeout),
		WithCurve(CurveClient{ServerPublic: sk.Public, Secret: client.Secret})); err != nil {
		t.Fatal(err)
	}
	if n := ts.calls.Load(); n != 3 {
		t.Errorf("handler ran %d times, want 3", n)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "curve_public=") || !strings.Contains(logs, sk.Public) {
		t.Errorf("server did not log its public key:\n%s", logs)
	}
}

func TestCurveClientNotAllowed(t *testing.T) {
	allowed, stranger := newKey(t), newKey(t)
	ts, sk := startCurveServer(t, allowed.Public)
	_, err := Fetch(context.Background(), ts.endpoint(), req(0), WithTimeout(refuseTimeout),
		WithCurve(stranger.Client(sk.Public)))
	var ue *UnauthenticatedError
	if !errors.Is(err, ErrUnauthenticated) || !errors.As(err, &ue) || errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want *UnauthenticatedError", err)
	}
	if ue.Failure != AuthRefused || ue.ClientPublic != stranger.Public || ue.Addr != ts.endpoint() {
		t.Errorf("error %+v, want AuthRefused naming our key and the address", ue)
	}
	msg := err.Error()
	for _, s := range []string{"refused our CURVE key", stranger.Public, "allow-list", "ZAP status 400", ts.endpoint()} {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not mention %q", msg, s)
		}
	}
	if strings.Contains(msg, stranger.Secret) {
		t.Errorf("error %q gives away the secret key", msg)
	}
	if n := ts.calls.Load(); n != 0 {
		t.Errorf("handler ran %d times for a refused client", n)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "not in the allow-list") || !strings.Contains(logs, stranger.Public) {
		t.Errorf("server did not log the refused key:\n%s", logs)
	}
}

func TestCurvePlaintextClientRefused(t *testing.T) {
	ts, _ := startCurveServer(t, newKey(t).Public)
	_, err := Fetch(context.Background(), ts.endpoint(), req(0), WithTimeout(refuseTimeout))
	var ue *UnauthenticatedError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want *UnauthenticatedError", err)
	}
	if ue.Failure != AuthServerRequiresCurve || !strings.Contains(err.Error(), "requires CURVE") {
		t.Errorf("err = %v (failure %v), want AuthServerRequiresCurve", err, ue.Failure)
	}
	if n := ts.calls.Load(); n != 0 {
		t.Errorf("handler ran %d times for a plaintext client", n)
	}
}

// A raw plaintext zmq client gets nothing either: the server's socket
// never delivers its request.
func TestCurveRawPlaintextClientGetsNothing(t *testing.T) {
	ts, _ := startCurveServer(t, newKey(t).Public)
	sk := rawDealer(t, ts.endpoint())
	sk.SetRcvtimeo(300 * time.Millisecond)
	body, _ := AppendRequest(nil, &Request{Version: ProtocolVersion, ID: 1, CompatHash: hashP})
	if _, err := sk.SendMessage("", body); err != nil {
		t.Fatal(err)
	}
	if msg, err := sk.RecvMessageBytes(0); err == nil {
		t.Fatalf("plaintext client got a reply: %q", msg)
	}
	if n := ts.calls.Load(); n != 0 {
		t.Errorf("handler ran %d times", n)
	}
}

func TestCurveClientPlaintextServer(t *testing.T) {
	ts := startServer(t, nil)
	client, fakeServerKey := newKey(t), newKey(t)
	_, err := Fetch(context.Background(), ts.endpoint(), req(0), WithTimeout(refuseTimeout),
		WithCurve(client.Client(fakeServerKey.Public)))
	var ue *UnauthenticatedError
	if !errors.As(err, &ue) || errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want *UnauthenticatedError", err)
	}
	// zmq reports either a mechanism mismatch or a closed connection,
	// depending on which side gives up first.
	if ue.Failure != AuthServerPlaintext && ue.Failure != AuthHandshakeFailed {
		t.Errorf("failure %v, want server plaintext or handshake failed", ue.Failure)
	}
	if msg := err.Error(); !strings.Contains(msg, "runs with CURVE") && !strings.Contains(msg, "prefill does not") {
		t.Errorf("error %q does not say the prefill may lack CURVE", msg)
	}
	if n := ts.calls.Load(); n != 0 {
		t.Errorf("handler ran %d times", n)
	}
}

func TestCurveWrongServerKey(t *testing.T) {
	client, impostor := newKey(t), newKey(t)
	ts, _ := startCurveServer(t, client.Public)
	_, err := Fetch(context.Background(), ts.endpoint(), req(0), WithTimeout(refuseTimeout),
		WithCurve(client.Client(impostor.Public)))
	var ue *UnauthenticatedError
	if !errors.As(err, &ue) || errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want *UnauthenticatedError", err)
	}
	if ue.Failure != AuthHandshakeFailed || ue.ServerPublic != impostor.Public {
		t.Errorf("error %+v, want AuthHandshakeFailed with the server key used", ue)
	}
	if msg := err.Error(); !strings.Contains(msg, impostor.Public) || !strings.Contains(msg, ".pub") {
		t.Errorf("error %q does not name the server key to check", msg)
	}
	if n := ts.calls.Load(); n != 0 {
		t.Errorf("handler ran %d times", n)
	}
}

// Two CURVE servers in one process, each with its own allow-list, and a
// plaintext one: each admits exactly its own clients, concurrently.
func TestCurveServersIndependent(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	a, _ := startCurveServer(t, k1.Public)
	b, _ := startCurveServer(t, k2.Public)
	plain := startServer(t, nil)
	type tc struct {
		ts    *testServer
		key   CurveKey
		admit bool
	}
	cases := []tc{{a, k1, true}, {a, k2, false}, {b, k2, true}, {b, k1, false}}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 3 {
		for i, c := range cases {
			wg.Go(func() {
				_, err := Fetch(context.Background(), c.ts.endpoint(), req(0), WithTimeout(okTimeout),
					WithCurve(c.key.Client(c.ts.CurvePublic())))
				switch {
				case c.admit && err != nil:
					errs <- fmt.Errorf("case %d: refused: %w", i, err)
				case !c.admit && !errors.Is(err, ErrUnauthenticated):
					errs <- fmt.Errorf("case %d: err = %v, want ErrUnauthenticated", i, err)
				}
			})
		}
		wg.Go(func() {
			if _, err := Fetch(context.Background(), plain.endpoint(), req(0), WithTimeout(okTimeout)); err != nil {
				errs <- errors.New("plaintext server: " + err.Error())
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if na, nb, np := a.calls.Load(), b.calls.Load(), plain.calls.Load(); na != 3 || nb != 3 || np != 3 {
		t.Errorf("handlers ran %d, %d, %d times, want 3 each", na, nb, np)
	}
}

func TestCurveConfigErrors(t *testing.T) {
	h := func(Request) (Reply, error) { return Reply{}, nil }
	k := newKey(t)
	for name, tc := range map[string]struct {
		curve *CurveServer
		want  string
	}{
		"short secret":    {&CurveServer{Secret: k.Secret[:39], Allow: []string{k.Public}}, "Curve.Secret: zmqchan: CURVE secret key: 39 characters"},
		"non-z85 secret":  {&CurveServer{Secret: "~" + k.Secret[1:], Allow: []string{k.Public}}, "not in the Z85 alphabet"},
		"empty allow":     {&CurveServer{Secret: k.Secret}, "Curve.Allow is empty"},
		"bad allowed key": {&CurveServer{Secret: k.Secret, Allow: []string{k.Public, "short"}}, "Curve.Allow[1]: 5 characters"},
	} {
		s, err := Listen(ServerConfig{Host: "127.0.0.1", Handler: h, Curve: tc.curve})
		if err == nil {
			s.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", name, err, tc.want)
		} else if strings.Contains(err.Error(), k.Secret[5:]) {
			t.Errorf("%s: error %q gives away the secret", name, err)
		}
	}

	other := newKey(t)
	for name, tc := range map[string]struct {
		c    CurveClient
		want string
	}{
		"bad server key":   {CurveClient{ServerPublic: "x", Secret: k.Secret}, "ServerPublic: 1 characters"},
		"no secret":        {CurveClient{ServerPublic: other.Public}, "Secret: zmqchan: CURVE secret key: 0 characters"},
		"mismatched pair":  {CurveClient{ServerPublic: other.Public, Public: other.Public, Secret: k.Secret}, "is not the public key of"},
		"public as secret": {CurveClient{ServerPublic: other.Public, Public: k.Public, Secret: k.Public}, "is not the public key of"},
	} {
		_, err := Fetch(context.Background(), "tcp://127.0.0.1:1", req(0), WithCurve(tc.c))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", name, err, tc.want)
		}
	}
}

func TestRankCheck(t *testing.T) {
	ts := startServer(t, nil, func(c *ServerConfig) { c.Ranks = 4 })
	for _, rank := range []int{0, 3, RankAll} {
		if _, err := Fetch(context.Background(), ts.endpoint(), req(rank), WithTimeout(okTimeout)); err != nil {
			t.Errorf("rank %d: %v", rank, err)
		}
	}
	for _, rank := range []int{4, 9999} {
		_, err := Fetch(context.Background(), ts.endpoint(), req(rank), WithTimeout(okTimeout))
		var re *RemoteError
		if !errors.As(err, &re) || re.Status != StatusBadRequest {
			t.Fatalf("rank %d: err = %v, want a bad-request *RemoteError", rank, err)
		}
		for _, s := range []string{"rank " + strconv.Itoa(rank), "[0, 4)"} {
			if !strings.Contains(re.Message, s) {
				t.Errorf("rank %d: message %q does not mention %q", rank, re.Message, s)
			}
		}
	}
	if n := ts.calls.Load(); n != 3 {
		t.Errorf("handler ran %d times, want 3 (the valid ranks only)", n)
	}
	// Without Ranks the handler decides, as before.
	open := startServer(t, nil)
	if _, err := Fetch(context.Background(), open.endpoint(), req(9999), WithTimeout(okTimeout)); err != nil || open.calls.Load() != 1 {
		t.Errorf("without Ranks: err %v, handler ran %d times; want the handler to get rank 9999", err, open.calls.Load())
	}
	if _, err := Listen(ServerConfig{Handler: ts.cfg.Handler, Ranks: -1}); err == nil || !strings.Contains(err.Error(), "Ranks -1") {
		t.Errorf("Ranks -1: err = %v", err)
	}
}

// rawDealer connects a plain DEALER socket, closed at cleanup.
func rawDealer(t *testing.T, endpoint string) *zmq4.Socket {
	t.Helper()
	zctx, err := zmq4.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	sk, err := zctx.NewSocket(zmq4.DEALER)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sk.Close()
		zctx.Term()
	})
	sk.SetLinger(0)
	sk.SetRcvtimeo(okTimeout)
	if err := sk.Connect(endpoint); err != nil {
		t.Fatal(err)
	}
	return sk
}

// The WARN line of bad requests is rate-limited, and the next line logged
// says how many were suppressed. The server's clock drives the limit, so
// the test controls time.
func TestBadRequestWarnRateLimited(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	ts := startServer(t, nil, func(c *ServerConfig) {
		c.Clock = func() time.Time { return time.Unix(0, now.Load()) }
	})
	sk := rawDealer(t, ts.endpoint())
	send := func(n int) {
		for range n {
			if _, err := sk.SendMessage("", "GET / HTTP/1.1"); err != nil {
				t.Fatal(err)
			}
			msg, err := sk.RecvMessageBytes(0)
			if err != nil || len(msg) != 2 {
				t.Fatalf("recv %d frames, %v", len(msg), err)
			}
			if rep, err := DecodeReply(msg[1]); err != nil || rep.Status != StatusBadRequest {
				t.Fatalf("reply %+v, %v; want bad request", rep, err)
			}
		}
	}
	lines := func() []string {
		var out []string
		for l := range strings.SplitSeq(ts.logs.String(), "\n") {
			if strings.Contains(l, "level=WARN") && strings.Contains(l, "bad request") {
				out = append(out, l)
			}
		}
		return out
	}
	const sent = warnBurst + 15
	send(sent)
	if got := lines(); len(got) != warnBurst {
		t.Fatalf("%d WARN lines for %d bad requests, want %d:\n%s", len(got), sent, warnBurst, strings.Join(got, "\n"))
	}
	now.Add(int64(time.Minute))
	send(1)
	got := lines()
	if len(got) != warnBurst+1 || !strings.Contains(got[len(got)-1], "suppressed=15") {
		t.Fatalf("after a minute: lines\n%s\nwant one more with suppressed=15", strings.Join(got, "\n"))
	}
	if n := ts.calls.Load(); n != 0 {
		t.Errorf("handler ran %d times", n)
	}
}

func TestZ85(t *testing.T) {
	for range 50 {
		b := make([]byte, 32)
		rand.Read(b)
		s := z85Encode(b)
		if want := zmq4.Z85encode(string(b)); s != want {
			t.Fatalf("z85Encode %q, libzmq %q", s, want)
		}
		got, err := z85Decode(s)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("z85Decode(%q) = %x, %v; want %x", s, got, err, b)
		}
		if s[0] == '#' || s[0] == '$' {
			t.Fatalf("key %q starts with a character that cannot start a 32-bit group", s)
		}
	}
	// "%nSc0" is 0xFFFFFFFF; one more overflows.
	if _, err := z85Decode("%nSc0"); err != nil {
		t.Errorf("max group: %v", err)
	}
	for _, bad := range []string{"%nSc1", "#0000", "abc d", "abcd"} {
		if _, err := z85Decode(bad); err == nil {
			t.Errorf("z85Decode(%q) accepted", bad)
		}
	}
}

func writeFile(t *testing.T, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}

func TestLoadCurveKey(t *testing.T) {
	k := newKey(t)
	p := writeFile(t, "p.key", k.Secret+"\n", 0o600)
	got, err := LoadCurveKey(p)
	if err != nil || got != k {
		t.Fatalf("LoadCurveKey = %+v, %v; want %+v", got, err, k)
	}
	// Comments and blank lines are allowed around the key.
	p = writeFile(t, "c.key", "# prefill-0\n\n  "+k.Secret+"  \n", 0o400)
	if got, err := LoadCurveKey(p); err != nil || got != k {
		t.Fatalf("with comments: %+v, %v", got, err)
	}
	for name, tc := range map[string]struct {
		content string
		mode    os.FileMode
		want    []string
	}{
		"group readable": {k.Secret + "\n", 0o640, []string{"chmod 600", "mode 0640", "group or others"}},
		"world readable": {k.Secret + "\n", 0o604, []string{"chmod 600"}},
		"short":          {"# x\n" + k.Secret[:30] + "\n", 0o600, []string{":2:", "30 characters, want 40"}},
		"not z85":        {strings.Repeat("~", 40) + "\n", 0o600, []string{":1:", "not in the Z85 alphabet"}},
		"two keys":       {k.Secret + "\n" + k.Secret + "\n", 0o600, []string{"holds 2 keys"}},
		"empty":          {"\n# nothing\n", 0o600, []string{"holds 0 keys"}},
		"junk after key": {k.Secret + " trailing\n", 0o600, []string{":1:", "'#' comment"}},
	} {
		p := writeFile(t, "s.key", tc.content, tc.mode)
		_, err := LoadCurveKey(p)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		for _, w := range append(tc.want, p) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", name, err, w)
			}
		}
		if strings.Contains(err.Error(), k.Secret[:30]) {
			t.Errorf("%s: error %q gives away the secret", name, err)
		}
	}
	if _, err := LoadCurveKey(filepath.Join(t.TempDir(), "missing.key")); err == nil || !strings.Contains(err.Error(), "missing.key") {
		t.Errorf("missing file: %v", err)
	}
}

func TestLoadAllowList(t *testing.T) {
	k1, k2, k3 := newKey(t), newKey(t), newKey(t)
	content := "# decode instances\n\n" + k1.Public + "\n" + k2.Public + "   # decode-1\n\t" + k3.Public + "\t#decode-2\n#" + k1.Secret + "\n"
	p := writeFile(t, "allow", content, 0o644)
	got, err := LoadAllowList(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{k1.Public, k2.Public, k3.Public}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("LoadAllowList = %v, want %v", got, want)
	}
	for name, tc := range map[string]struct{ content, want string }{
		"bad line":  {k1.Public + "\n" + k2.Public + "x\n", ":2: not a CURVE key: 41 characters"},
		"two keys":  {k1.Public + " " + k2.Public + "\n", ":1: want one Z85 key per line"},
		"no key":    {"# nobody\n", "lists no key"},
		"bad chars": {"\n\n" + strings.Repeat("\"", 40) + "\n", ":3: not a CURVE key"},
	} {
		p := writeFile(t, "allow", tc.content, 0o644)
		if _, err := LoadAllowList(p); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err = %v, want it to name %s and say %q", name, err, p, tc.want)
		}
	}

	// LoadCurveServer and LoadCurvePublic put it together.
	srv := newKey(t)
	keyPath := writeFile(t, "srv.key", srv.Secret+"\n", 0o600)
	pubPath := writeFile(t, "srv.pub", srv.Public+"\n", 0o644)
	cs, err := LoadCurveServer(keyPath, writeFile(t, "allow", content, 0o644))
	if err != nil || cs.Secret != srv.Secret || len(cs.Allow) != 3 {
		t.Fatalf("LoadCurveServer = %+v, %v", cs, err)
	}
	if pub, err := LoadCurvePublic(pubPath); err != nil || pub != srv.Public {
		t.Fatalf("LoadCurvePublic = %q, %v", pub, err)
	}
	ts := startServer(t, nil, func(c *ServerConfig) { c.Curve = cs })
	if _, err := Fetch(context.Background(), ts.endpoint(), req(0), WithTimeout(okTimeout), WithCurve(k2.Client(srv.Public))); err != nil {
		t.Fatalf("with keys from files: %v", err)
	}
}

func TestTimeoutSaysHowFar(t *testing.T) {
	_, err := Fetch(context.Background(), Endpoint("127.0.0.1", freePort(t), 0), req(0), WithTimeout(200*time.Millisecond))
	var te *TimeoutError
	if !errors.As(err, &te) || te.Connected || te.Handshaken {
		t.Fatalf("no listener: err = %v (%+v), want a timeout without connection", err, te)
	}
	ts, g := startGatedServer(t)
	_, err = Fetch(context.Background(), ts.endpoint(), req(0), WithTimeout(300*time.Millisecond))
	if !errors.As(err, &te) || !te.Connected || !te.Handshaken || !strings.Contains(err.Error(), "did not answer in time") {
		t.Fatalf("blocked handler: err = %v (%+v), want a timeout after the handshake", err, te)
	}
	<-g.entered
}
