package zmqchan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pebbe/zmq4"
)

// These tests talk over tcp on 127.0.0.1 and never assert on timing: a
// timeout is only checked to end in ErrTimeout. They do not run in parallel,
// so that the goroutine leak checks see only the server under test.

const okTimeout = 20 * time.Second // generous: CI machines are shared

var (
	hashP = Hash{0xaa, 1, 2, 3}
	hashD = Hash{0xbb, 4, 5, 6}
)

var summaryP = map[string]string{"model": "qwen3-next", "block_size": "16", "kv_layout": "HND", "dtype": "bf16"}

// logBuffer collects a server's logs; the test prints them when it fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// rankPayload is the metadata the default test handler serves.
func rankPayload(rank int, client string) []byte {
	return fmt.Appendf(nil, "meta rank=%d for=%s", rank, client)
}

type testServer struct {
	*Server
	logs  *logBuffer
	calls atomic.Int64
}

// startServer starts a server on 127.0.0.1 on an ephemeral port. handler nil
// serves rankPayload.
func startServer(t testing.TB, handler Handler, edit ...func(*ServerConfig)) *testServer {
	t.Helper()
	ts := &testServer{logs: &logBuffer{}}
	if handler == nil {
		handler = func(req Request) (Reply, error) {
			return Reply{Payload: rankPayload(req.Rank, req.EngineID)}, nil
		}
	}
	cfg := ServerConfig{
		Host:       "127.0.0.1",
		DPIndex:    3,
		EngineID:   "prefill-0",
		CompatHash: hashP,
		Summary:    summaryP,
		Handler: func(req Request) (Reply, error) {
			ts.calls.Add(1)
			return handler(req)
		},
		Logger: slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, e := range edit {
		e(&cfg)
	}
	s, err := Listen(cfg)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ts.Server = s
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			t.Logf("server logs:\n%s", ts.logs)
		}
	})
	return ts
}

func (ts *testServer) endpoint() string { return Endpoint("127.0.0.1", ts.Port(), 0) }

func req(rank int) Request {
	return Request{Rank: rank, EngineID: "decode-0", CompatHash: hashP}
}

// freePort returns a TCP port nobody listens on (as of the call).
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// serverGoroutines returns the stacks of goroutines running Server code.
// serverGoroutines lists the server's goroutines still alive. A worker
// counts itself done (WaitGroup.Done, its last deferred call) just before
// it returns, so one may still be unwinding when Close returns: the list
// is taken again until it is empty or two seconds passed (a bound, not a
// speed assertion: a leaked goroutine never leaves).
func serverGoroutines() []string {
	deadline := time.Now().Add(2 * time.Second)
	for {
		gs := serverGoroutinesNow()
		if len(gs) == 0 || time.Now().After(deadline) {
			return gs
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func serverGoroutinesNow() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "zmqchan.(*Server)") {
			out = append(out, g)
		}
	}
	return out
}

// gate is a handler that blocks until released.
type gate struct {
	entered  chan struct{} // one value per call
	release  chan struct{}
	returned atomic.Int64
	once     sync.Once
}

func newGate(t testing.TB) *gate {
	g := &gate{entered: make(chan struct{}, 64), release: make(chan struct{})}
	return g
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

func (g *gate) handler(req Request) (Reply, error) {
	g.entered <- struct{}{}
	<-g.release
	defer g.returned.Add(1)
	return Reply{Payload: rankPayload(req.Rank, req.EngineID)}, nil
}

// startGatedServer starts a server whose handler blocks until g is opened;
// g is opened before the server is closed at cleanup.
func startGatedServer(t *testing.T, edit ...func(*ServerConfig)) (*testServer, *gate) {
	g := newGate(t)
	ts := startServer(t, g.handler, edit...)
	t.Cleanup(g.open) // LIFO: runs before the server's Close
	return ts, g
}

func TestFetchRoundTrip(t *testing.T) {
	ts := startServer(t, nil)
	for _, rank := range []int{0, 2, RankAll} {
		r := req(rank)
		r.ID = 12345 + uint64(rank+1)
		before := time.Now()
		rep, err := Fetch(context.Background(), ts.endpoint(), r, WithTimeout(okTimeout), WithExpectedEngine("prefill-0"))
		if err != nil {
			t.Fatalf("rank %d: %v", rank, err)
		}
		if want := rankPayload(rank, "decode-0"); !bytes.Equal(rep.Payload, want) {
			t.Errorf("rank %d: payload %q, want %q", rank, rep.Payload, want)
		}
		if rep.Version != ProtocolVersion || rep.Status != StatusOK || rep.RequestID != r.ID ||
			rep.EngineID != "prefill-0" || rep.DPIndex != 3 || rep.CompatHash != hashP {
			t.Errorf("rank %d: level 1 = %+v", rank, rep)
		}
		if !maps.Equal(rep.Summary, summaryP) {
			t.Errorf("summary %v, want %v", rep.Summary, summaryP)
		}
		if rep.Sent.Before(before) || rep.Received.Before(rep.Sent) {
			t.Errorf("sent %v received %v, fetch started %v", rep.Sent, rep.Received, before)
		}
	}
	if n := ts.calls.Load(); n != 3 {
		t.Errorf("handler ran %d times, want 3", n)
	}
}

func TestHandlerSeesRequest(t *testing.T) {
	got := make(chan Request, 1)
	ts := startServer(t, func(r Request) (Reply, error) {
		got <- r
		return Reply{}, nil
	})
	r := Request{Rank: 5, EngineID: "decode-9", CompatHash: hashP, ID: 77}
	rep, err := Fetch(context.Background(), ts.endpoint(), r, WithTimeout(okTimeout))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Payload != nil {
		t.Errorf("payload %q, want none", rep.Payload)
	}
	r.Version = ProtocolVersion
	if h := <-got; h != r {
		t.Errorf("handler got %+v, want %+v", h, r)
	}
}

// The server stamps level 1 from its config whatever the handler returns.
func TestServerStampsLevel1(t *testing.T) {
	ts := startServer(t, func(r Request) (Reply, error) {
		return Reply{EngineID: "liar", DPIndex: 99, CompatHash: hashD, Status: StatusBusy, Payload: []byte("x")}, nil
	})
	rep, err := Fetch(context.Background(), ts.endpoint(), req(0), WithTimeout(okTimeout))
	if err != nil {
		t.Fatal(err)
	}
	if rep.EngineID != "prefill-0" || rep.DPIndex != 3 || rep.CompatHash != hashP || rep.Status != StatusOK {
		t.Fatalf("level 1 taken from the handler: %+v", rep)
	}
}

func TestClockOffset(t *testing.T) {
	const skew = time.Hour
	ts := startServer(t, nil, func(c *ServerConfig) {
		c.Clock = func() time.Time { return time.Now().Add(skew) }
	})
	rep, err := Fetch(context.Background(), ts.endpoint(), req(0), WithTimeout(okTimeout))
	if err != nil {
		t.Fatal(err)
	}
	// The server stamped its clock between Sent and Received, so the
	// estimate is within the uncertainty (plus slack for the wall clock
	// being read twice per side).
	off, unc := rep.ClockOffset()
	if d := (off - skew).Abs(); d > unc+time.Millisecond {
		t.Fatalf("offset %v ± %v, want %v", off, unc, skew)
	}
}

func TestListenPort(t *testing.T) {
	port := freePort(t)
	ts := startServer(t, nil, func(c *ServerConfig) { c.BasePort, c.DPIndex = port-2, 2 })
	if ts.Port() != port || ts.Addr() != fmt.Sprintf("tcp://127.0.0.1:%d", port) {
		t.Fatalf("bound %s (port %d), want port %d = base %d + dp 2", ts.Addr(), ts.Port(), port, port-2)
	}
	if _, err := Fetch(context.Background(), Endpoint("127.0.0.1", port-2, 2), req(0), WithTimeout(okTimeout)); err != nil {
		t.Fatal(err)
	}
	// The port is taken now.
	_, err := Listen(ServerConfig{Host: "127.0.0.1", BasePort: port, Handler: ts.cfg.Handler, Logger: ts.cfg.Logger})
	if err == nil || !strings.Contains(err.Error(), "bind") || !strings.Contains(err.Error(), fmt.Sprint(port)) {
		t.Fatalf("second Listen on port %d: err %v, want a bind error naming the port", port, err)
	}
}

func TestListenConfigErrors(t *testing.T) {
	h := func(Request) (Reply, error) { return Reply{}, nil }
	for name, cfg := range map[string]ServerConfig{
		"no handler":   {},
		"negative dp":  {Handler: h, DPIndex: -1},
		"port too big": {Handler: h, BasePort: 65530, DPIndex: 6},
		"bad port":     {Handler: h, BasePort: 70000},
		"long engine":  {Handler: h, EngineID: strings.Repeat("e", MaxEngineIDLen+1)},
		"bad host":     {Handler: h, Host: "127.0.0.1:99"}, // no DNS lookup
	} {
		if s, err := Listen(cfg); err == nil || !strings.HasPrefix(err.Error(), "zmqchan: ") {
			if s != nil {
				s.Close()
			}
			t.Errorf("%s: err = %v, want a zmqchan error", name, err)
		}
	}
}

func TestFetchConcurrent(t *testing.T) {
	ts := startServer(t, nil)
	const clients, fetches = 32, 20
	var wg sync.WaitGroup
	errs := make(chan error, clients*fetches)
	for c := range clients {
		wg.Go(func() {
			for i := range fetches {
				rank := (c + i) % 8
				r := req(rank)
				r.EngineID = fmt.Sprintf("decode-%d", c)
				rep, err := Fetch(context.Background(), ts.endpoint(), r, WithTimeout(okTimeout))
				if err != nil {
					errs <- fmt.Errorf("client %d fetch %d: %w", c, i, err)
					continue
				}
				if want := rankPayload(rank, r.EngineID); !bytes.Equal(rep.Payload, want) {
					errs <- fmt.Errorf("client %d fetch %d: payload %q, want %q", c, i, rep.Payload, want)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := ts.calls.Load(); n != clients*fetches {
		t.Errorf("handler ran %d times, want %d", n, clients*fetches)
	}
}

func TestHashMismatch(t *testing.T) {
	ts := startServer(t, nil)
	local := map[string]string{"model": "qwen3-next", "block_size": "32", "dtype": "bf16", "ssm_dtype": "fp32"}
	r := Request{Rank: 0, EngineID: "decode-1", CompatHash: hashD}
	_, err := Fetch(context.Background(), ts.endpoint(), r, WithTimeout(okTimeout), WithSummary(local))
	var he *HashMismatchError
	if !errors.Is(err, ErrHashMismatch) || !errors.As(err, &he) {
		t.Fatalf("err = %v, want *HashMismatchError", err)
	}
	if he.Local != hashD.String() || he.Remote != hashP.String() {
		t.Errorf("hashes local %s remote %s, want %s and %s", he.Local, he.Remote, hashD, hashP)
	}
	if want := []string{"block_size", "kv_layout", "ssm_dtype"}; !slices.Equal(he.Keys, want) {
		t.Errorf("differing keys %v, want %v", he.Keys, want)
	}
	msg := err.Error()
	for _, s := range []string{"zmqchan:", hashD.String(), hashP.String(), `block_size: local "32", remote "16"`,
		`kv_layout: local (absent), remote "HND"`, "ssm_dtype", ts.endpoint()} {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not mention %q", msg, s)
		}
	}
	if strings.Contains(msg, "model:") {
		t.Errorf("error %q names a field that agrees", msg)
	}
	// The server withheld the metadata and logged the client.
	if n := ts.calls.Load(); n != 0 {
		t.Errorf("handler ran %d times for an incompatible client", n)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "client_engine=decode-1") || !strings.Contains(logs, hashD.String()) {
		t.Errorf("server logs do not name the client and its hash:\n%s", logs)
	}

	// A caller-supplied diff replaces the default one.
	hook := func(l, r map[string]string) string { return fmt.Sprintf("custom %d vs %d", len(l), len(r)) }
	_, err = Fetch(context.Background(), ts.endpoint(), r, WithTimeout(okTimeout), WithSummary(local), WithSummaryDiff(hook))
	if !errors.As(err, &he) || he.Diff != "custom 4 vs 4" || !strings.Contains(err.Error(), "custom 4 vs 4") {
		t.Fatalf("err = %v, want the hook's diff", err)
	}
	// Without a local summary the error still names both hashes.
	_, err = Fetch(context.Background(), ts.endpoint(), r, WithTimeout(okTimeout))
	if !errors.As(err, &he) || he.Keys != nil || !strings.Contains(err.Error(), hashP.String()) {
		t.Fatalf("err = %v", err)
	}
}

func TestEngineMismatch(t *testing.T) {
	ts := startServer(t, nil)
	_, err := Fetch(context.Background(), ts.endpoint(), req(0), WithTimeout(okTimeout), WithExpectedEngine("prefill-7"))
	var ee *EngineMismatchError
	if !errors.Is(err, ErrEngineMismatch) || !errors.As(err, &ee) || ee.Expected != "prefill-7" || ee.Got != "prefill-0" {
		t.Fatalf("err = %v, want *EngineMismatchError prefill-7 vs prefill-0", err)
	}
}

// A client of a newer version against this server.
func TestVersionMismatchClientNewer(t *testing.T) {
	ts := startServer(t, nil)
	r := req(0)
	r.Version = ProtocolVersion + 1
	_, err := Fetch(context.Background(), ts.endpoint(), r, WithTimeout(okTimeout))
	var vm *VersionMismatchError
	if !errors.Is(err, ErrVersionMismatch) || !errors.As(err, &vm) ||
		vm.Local != ProtocolVersion+1 || vm.Remote != ProtocolVersion || vm.Addr != ts.endpoint() {
		t.Fatalf("err = %v, want *VersionMismatchError local %d remote %d", err, ProtocolVersion+1, ProtocolVersion)
	}
	if n := ts.calls.Load(); n != 0 {
		t.Errorf("handler ran %d times", n)
	}
	if !strings.Contains(ts.logs.String(), "client_version=2") {
		t.Errorf("server did not log the client's version:\n%s", ts.logs)
	}
}

// fakeServer runs a raw ROUTER socket that answers every request with the
// frames answer returns (after the routing identity).
func fakeServer(t *testing.T, answer func(body []byte) [][]byte) string {
	t.Helper()
	zctx, err := zmq4.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	sk, err := zctx.NewSocket(zmq4.ROUTER)
	if err != nil {
		t.Fatal(err)
	}
	sk.SetLinger(0)
	if err := sk.Bind("tcp://127.0.0.1:*"); err != nil {
		t.Fatal(err)
	}
	addr, err := sk.GetLastEndpoint()
	if err != nil {
		t.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { // owns sk from here on
		defer close(done)
		defer sk.Close()
		p := zmq4.NewPoller()
		p.Add(sk, zmq4.POLLIN)
		for {
			select {
			case <-stop:
				return
			default:
			}
			polled, err := p.Poll(20 * time.Millisecond)
			if err != nil {
				return
			}
			if len(polled) == 0 {
				continue
			}
			msg, err := sk.RecvMessageBytes(0)
			if err != nil || len(msg) < 2 {
				continue
			}
			sk.SendMessage(msg[0], answer(msg[len(msg)-1]))
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		zctx.Term()
	})
	return addr
}

// answerReply answers with the encoding of r, echoing the request id.
func answerReply(r Reply) func([]byte) [][]byte {
	return func(body []byte) [][]byte {
		q, _ := DecodeRequest(body)
		r.RequestID = q.ID
		b, _ := AppendReply(nil, &r)
		return [][]byte{{}, b}
	}
}

func TestFakeServerSanity(t *testing.T) {
	// The fake server itself works, so the failures below are the client's
	// checks and not a broken fake.
	addr := fakeServer(t, answerReply(Reply{Version: ProtocolVersion, CompatHash: hashP, Payload: []byte("ok")}))
	rep, err := Fetch(context.Background(), addr, req(0), WithTimeout(okTimeout))
	if err != nil || string(rep.Payload) != "ok" {
		t.Fatalf("Fetch = %+v, %v", rep, err)
	}
}

// A server of a newer version: the client reads no further than the version.
func TestVersionMismatchServerNewer(t *testing.T) {
	addr := fakeServer(t, func([]byte) [][]byte {
		b := append(replyMagic[:], 2, 0)
		return [][]byte{{}, append(b, "a layout this client does not know"...)}
	})
	_, err := Fetch(context.Background(), addr, req(0), WithTimeout(okTimeout))
	var vm *VersionMismatchError
	if !errors.As(err, &vm) || vm.Local != ProtocolVersion || vm.Remote != 2 || vm.Addr != addr {
		t.Fatalf("err = %v, want *VersionMismatchError local 1 remote 2 at %s", err, addr)
	}
	if msg := err.Error(); !strings.Contains(msg, "local version 1, remote version 2") {
		t.Errorf("error %q does not give both versions", msg)
	}
}

func TestMalformedReply(t *testing.T) {
	good := Reply{Version: ProtocolVersion, CompatHash: hashP}
	tests := []struct {
		name, reason string
		answer       func([]byte) [][]byte
	}{
		{"garbage", "bad magic", func([]byte) [][]byte { return [][]byte{{}, []byte("HTTP/1.1 400 Bad Request\r\n")} }},
		{"empty body", "shorter than", func([]byte) [][]byte { return [][]byte{{}, {}} }},
		{"truncated", "truncated", func(b []byte) [][]byte {
			f := answerReply(good)(b)
			f[1] = f[1][:len(f[1])-3]
			return f
		}},
		{"no delimiter", "got 1 frames", func(b []byte) [][]byte { return answerReply(good)(b)[1:] }},
		{"extra frame", "3 frames", func(b []byte) [][]byte { return append(answerReply(good)(b), []byte("x")) }},
		{"wrong request id", "answers request 1, sent", func([]byte) [][]byte {
			b, _ := AppendReply(nil, &Reply{Version: ProtocolVersion, CompatHash: hashP, RequestID: 1})
			return [][]byte{{}, b}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeServer(t, tc.answer)
			rep, err := Fetch(context.Background(), addr, req(0), WithTimeout(okTimeout))
			var me *MalformedError
			if !errors.Is(err, ErrMalformed) || !errors.As(err, &me) {
				t.Fatalf("Fetch = %+v, %v; want *MalformedError", rep, err)
			}
			if !strings.Contains(err.Error(), tc.reason) || me.Addr != addr {
				t.Fatalf("err %q (addr %q), want it to say %q and name %s", err, me.Addr, tc.reason, addr)
			}
		})
	}
}

func TestHandlerError(t *testing.T) {
	ts := startServer(t, func(r Request) (Reply, error) {
		if r.Rank == 1 {
			panic("index out of range [7] with length 4")
		}
		return Reply{Payload: []byte("not sent")}, fmt.Errorf("rank %d out of range: tp size 4", r.Rank)
	})
	_, err := Fetch(context.Background(), ts.endpoint(), req(9), WithTimeout(okTimeout))
	var re *RemoteError
	if !errors.Is(err, ErrRemote) || !errors.As(err, &re) || re.Status != StatusHandlerError ||
		re.Message != "rank 9 out of range: tp size 4" || re.Engine != "prefill-0" {
		t.Fatalf("err = %v, want *RemoteError with the handler's message", err)
	}
	if !strings.Contains(err.Error(), "rank 9 out of range: tp size 4") {
		t.Errorf("error %q does not carry the handler's message", err)
	}
	// A panicking handler is an error too, and the server survives it.
	_, err = Fetch(context.Background(), ts.endpoint(), req(1), WithTimeout(okTimeout))
	if !errors.As(err, &re) || !strings.Contains(re.Message, "handler panicked: index out of range") {
		t.Fatalf("err = %v, want the panic as a remote error", err)
	}
	if _, err = Fetch(context.Background(), ts.endpoint(), req(9), WithTimeout(okTimeout)); !errors.Is(err, ErrRemote) {
		t.Fatalf("after a panic: err = %v, want ErrRemote", err)
	}
}

// A request the server cannot decode gets StatusBadRequest.
func TestServerBadRequest(t *testing.T) {
	ts := startServer(t, nil)
	zctx, err := zmq4.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer zctx.Term()
	sk, err := zctx.NewSocket(zmq4.DEALER)
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Close()
	sk.SetLinger(0)
	sk.SetRcvtimeo(okTimeout)
	if err := sk.Connect(ts.endpoint()); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{"GET / HTTP/1.1", string(requestMagic[:]) + "\x01\x00short"} {
		if _, err := sk.SendMessage("", body); err != nil {
			t.Fatal(err)
		}
		msg, err := sk.RecvMessageBytes(0)
		if err != nil || len(msg) != 2 {
			t.Fatalf("%q: recv %d frames, %v", body, len(msg), err)
		}
		rep, err := DecodeReply(msg[1])
		if err != nil || rep.Status != StatusBadRequest || !strings.Contains(rep.Message, "malformed request") {
			t.Fatalf("%q: reply %+v, %v; want status bad request", body, rep, err)
		}
	}
	if n := ts.calls.Load(); n != 0 {
		t.Errorf("handler ran %d times", n)
	}
}

func TestTimeoutNoListener(t *testing.T) {
	addr := Endpoint("127.0.0.1", freePort(t), 0)
	const timeout = 300 * time.Millisecond
	_, err := Fetch(context.Background(), addr, req(0), WithTimeout(timeout))
	var te *TimeoutError
	if !errors.Is(err, ErrTimeout) || !errors.As(err, &te) || te.Addr != addr || te.Timeout != timeout {
		t.Fatalf("err = %v, want *TimeoutError for %s after %v", err, addr, timeout)
	}
	if msg := err.Error(); !strings.Contains(msg, addr) || !strings.Contains(msg, "300ms") {
		t.Errorf("error %q does not name the address and the timeout", msg)
	}
}

func TestTimeoutBlockedHandler(t *testing.T) {
	ts, g := startGatedServer(t)
	_, err := Fetch(context.Background(), ts.endpoint(), req(0), WithTimeout(300*time.Millisecond))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	<-g.entered // the request did reach the handler
}

func TestContextDeadline(t *testing.T) {
	ts, _ := startGatedServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := Fetch(ctx, ts.endpoint(), req(0), WithTimeout(time.Hour))
	var te *TimeoutError
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &te) || te.Timeout > time.Second {
		t.Fatalf("err = %v, want ErrTimeout wrapping context.DeadlineExceeded with the context's timeout", err)
	}
}

func TestContextCanceled(t *testing.T) {
	ts, g := startGatedServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-g.entered
		cancel()
	}()
	_, err := Fetch(ctx, ts.endpoint(), req(0), WithTimeout(time.Hour))
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestServerBusy(t *testing.T) {
	ts, g := startGatedServer(t, func(c *ServerConfig) { c.Workers, c.QueueLen = 1, 1 })
	type result struct {
		rep *Reply
		err error
	}
	results := make(chan result, 3)
	fetch := func() {
		rep, err := Fetch(context.Background(), ts.endpoint(), req(0), WithTimeout(okTimeout))
		results <- result{rep, err}
	}
	go fetch()
	<-g.entered // the only worker is busy
	go fetch()  // one of these two waits in the queue,
	go fetch()  // the other is refused
	r := <-results
	var re *RemoteError
	if !errors.As(r.err, &re) || re.Status != StatusBusy {
		t.Fatalf("first result: %+v, %v; want a busy *RemoteError", r.rep, r.err)
	}
	g.open()
	for range 2 {
		if r := <-results; r.err != nil {
			t.Errorf("fetch: %v", r.err)
		}
	}
}

func TestCloseWhileClientWaits(t *testing.T) {
	ts, g := startGatedServer(t)
	fetched := make(chan error, 1)
	go func() {
		_, err := Fetch(context.Background(), ts.endpoint(), req(0), WithTimeout(time.Second))
		fetched <- err
	}()
	<-g.entered
	closed := make(chan error, 1)
	go func() { closed <- ts.Close() }()
	<-ts.loopDone // the ROUTER socket is closed: no reply can go out
	// Close must still wait for the blocked handler. (The wait only gives a
	// broken Close the time to return; a correct one cannot return here.)
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a handler was still running", err)
	case <-time.After(100 * time.Millisecond):
	}
	g.open()
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if g.returned.Load() != 1 {
		t.Fatalf("Close returned before the running handler did")
	}
	if gs := serverGoroutines(); len(gs) > 0 {
		t.Fatalf("goroutines left after Close:\n%s", strings.Join(gs, "\n\n"))
	}
	if err := <-fetched; !errors.Is(err, ErrTimeout) {
		t.Fatalf("client waiting across Close: err = %v, want ErrTimeout", err)
	}
}

func TestCloseIdempotent(t *testing.T) {
	ts := startServer(t, nil)
	if _, err := Fetch(context.Background(), ts.endpoint(), req(0), WithTimeout(okTimeout)); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := ts.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
	if gs := serverGoroutines(); len(gs) > 0 {
		t.Fatalf("goroutines left after Close:\n%s", strings.Join(gs, "\n\n"))
	}
	if _, err := Fetch(context.Background(), ts.endpoint(), req(0), WithTimeout(200*time.Millisecond)); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Fetch after Close: err = %v, want ErrTimeout", err)
	}
	// The port is free again.
	s2, err := Listen(ServerConfig{Host: "127.0.0.1", BasePort: ts.Port(), Handler: ts.cfg.Handler, Logger: ts.cfg.Logger})
	if err != nil {
		t.Fatalf("Listen on the closed server's port: %v", err)
	}
	s2.Close()
}

func TestFetchBadArguments(t *testing.T) {
	ctx := context.Background()
	if _, err := Fetch(ctx, "10.0.0.1:5600", req(0)); err == nil || !strings.Contains(err.Error(), "tcp://host:port") {
		t.Errorf("endpoint without scheme: err = %v", err)
	}
	if _, err := Fetch(ctx, "tcp://127.0.0.1:1", req(-2)); err == nil || !strings.Contains(err.Error(), "rank -2") {
		t.Errorf("rank -2: err = %v", err)
	}
	if _, err := Fetch(ctx, "tcp://127.0.0.1:1", req(0), WithTimeout(0)); err == nil {
		t.Errorf("zero timeout: no error")
	}
}

func BenchmarkFetch(b *testing.B) {
	payload := bytes.Repeat([]byte{7}, 512)
	ts := startServer(b, func(Request) (Reply, error) { return Reply{Payload: payload}, nil }, func(c *ServerConfig) {
		c.Logger = slog.New(slog.DiscardHandler)
	})
	addr := ts.endpoint()
	ctx := context.Background()
	var rtts []time.Duration
	for b.Loop() {
		rep, err := Fetch(ctx, addr, req(0), WithTimeout(okTimeout))
		if err != nil {
			b.Fatal(err)
		}
		rtts = append(rtts, rep.RTT())
	}
	slices.Sort(rtts)
	b.ReportMetric(float64(rtts[len(rtts)/2].Microseconds()), "p50-rtt-us")
	b.ReportMetric(float64(rtts[len(rtts)*99/100].Microseconds()), "p99-rtt-us")
}

// BenchmarkServerRoundTrip measures the server path alone: one persistent
// DEALER socket, so no connection setup per request (compare BenchmarkFetch,
// which opens a fresh socket and tcp connection per call).
func BenchmarkServerRoundTrip(b *testing.B) {
	payload := bytes.Repeat([]byte{7}, 512)
	ts := startServer(b, func(Request) (Reply, error) { return Reply{Payload: payload}, nil }, func(c *ServerConfig) {
		c.Logger = slog.New(slog.DiscardHandler)
	})
	zctx, err := zmq4.NewContext()
	if err != nil {
		b.Fatal(err)
	}
	defer zctx.Term()
	sk, err := zctx.NewSocket(zmq4.DEALER)
	if err != nil {
		b.Fatal(err)
	}
	defer sk.Close()
	sk.SetLinger(0)
	sk.SetRcvtimeo(okTimeout)
	if err := sk.Connect(ts.endpoint()); err != nil {
		b.Fatal(err)
	}
	body, _ := AppendRequest(nil, &Request{Version: ProtocolVersion, ID: 1, CompatHash: hashP})
	for b.Loop() {
		if _, err := sk.SendMessage("", body); err != nil {
			b.Fatal(err)
		}
		msg, err := sk.RecvMessageBytes(0)
		if err != nil || len(msg) != 2 {
			b.Fatalf("recv: %d frames, %v", len(msg), err)
		}
		if _, err := checkReply1("", &Request{Version: ProtocolVersion, ID: 1, CompatHash: hashP}, msg[1], &fetchOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
