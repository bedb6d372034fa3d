package ucx

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// The two-process tests re-execute this test binary as P (TestHelperProcess
// with envHelper set). P allocates a region filled with the pattern of
// helperSeed, prints its address and MemDesc as one JSON line on stdout, and
// then obeys one-word commands on stdin, answering each with a line:
//
//	stall    stop P's progress goroutine (emulated gets stall)
//	unstall  let it run again
//	exit     close the transport and exit 0
//
// EOF on stdin is exit.
const (
	envHelper     = "HYBRIDXFER_UCX_HELPER"
	envHelperMode = "HYBRIDXFER_UCX_HELPER_MODE" // "none" or "peer"
	envHelperTLS  = "HYBRIDXFER_UCX_HELPER_TLS"
	envHelperSize = "HYBRIDXFER_UCX_HELPER_SIZE"
	envHelperUCX  = "HYBRIDXFER_UCX_HELPER_UCX" // extra Config.UCX, "K=V;K=V"
	helperSeed    = 42
)

type helperHello struct {
	Addr []byte
	Desc transport.MemDesc
}

func TestHelperProcess(t *testing.T) {
	if os.Getenv(envHelper) != "1" {
		t.Skip("helper process for the two-process tests")
	}
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(3)
	}
	cfg := Config{Name: "helper"}
	if os.Getenv(envHelperMode) == "peer" {
		cfg.ErrMode = ErrModePeer
	}
	cfg.UCX = map[string]string{}
	if tls := os.Getenv(envHelperTLS); tls != "" {
		cfg.UCX["TLS"] = tls
	}
	for _, kv := range strings.Split(os.Getenv(envHelperUCX), ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			cfg.UCX[k] = v
		}
	}
	size, err := strconv.Atoi(os.Getenv(envHelperSize))
	if err != nil {
		fail(err)
	}
	tr, err := New(cfg, transport.Handlers{})
	if err != nil {
		fail(err)
	}
	m, err := tr.AllocMemory(size)
	if err != nil {
		fail(err)
	}
	fill(m.Bytes(), helperSeed)
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(helperHello{Addr: tr.Address(), Desc: m.Desc()}); err != nil {
		fail(err)
	}
	var release chan struct{}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch cmd := in.Text(); cmd {
		case "stall":
			entered := make(chan struct{})
			release = make(chan struct{})
			rel := release
			if err := tr.submit(func() { close(entered); <-rel }); err != nil {
				fail(err)
			}
			<-entered
		case "unstall":
			close(release)
		case "exit":
			tr.Close()
			fmt.Println("ok")
			os.Exit(0)
		default:
			fail(fmt.Errorf("unknown command %q", cmd))
		}
		fmt.Println("ok")
	}
	tr.Close()
	os.Exit(0)
}

// helper is a running P process.
type helper struct {
	t      testing.TB
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Reader
	hello  helperHello
	done   chan struct{} // closed when the process exited
	state  *os.ProcessState
	stderr *syncBuffer
}

// syncBuffer collects a helper's stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startHelper(t testing.TB, mode ErrMode, tls string, size int, env ...string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v=false")
	cmd.Env = append(os.Environ(), envHelper+"=1", envHelperMode+"="+mode.String(),
		envHelperTLS+"="+tls, envHelperSize+"="+strconv.Itoa(size))
	cmd.Env = append(cmd.Env, env...)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{t: t, cmd: cmd, in: in, out: bufio.NewReader(outp), done: make(chan struct{}), stderr: stderr}
	t.Cleanup(func() {
		h.kill()
		if t.Failed() {
			t.Logf("helper stderr:\n%s", stderr.String())
		}
	})
	line, err := h.readLine()
	if err != nil {
		t.Fatalf("helper hello: %v", err)
	}
	if err := json.Unmarshal([]byte(line), &h.hello); err != nil {
		t.Fatalf("helper hello %q: %v", line, err)
	}
	go func() {
		_ = cmd.Wait()
		h.state = cmd.ProcessState
		close(h.done)
	}()
	return h
}

func (h *helper) readLine() (string, error) {
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := h.out.ReadString('\n')
		ch <- res{strings.TrimSpace(s), err}
	}()
	select {
	case r := <-ch:
		return r.s, r.err
	case <-time.After(hangGuard):
		return "", errors.New("helper did not answer")
	}
}

func (h *helper) do(cmd string) {
	h.t.Helper()
	if _, err := fmt.Fprintln(h.in, cmd); err != nil {
		h.t.Fatalf("helper %s: %v", cmd, err)
	}
	if line, err := h.readLine(); err != nil || line != "ok" {
		h.t.Fatalf("helper %s: %q %v", cmd, line, err)
	}
}

// kill SIGKILLs the helper and waits for it to exit.
func (h *helper) kill() {
	_ = h.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-h.done:
	case <-time.After(hangGuard):
		h.t.Errorf("helper did not exit after SIGKILL")
	}
}

// scatterSize returns the block count and size of the big transfers.
func scatterSize() (n int, size uint64) {
	if raceEnabled || testing.Short() {
		return 256, 64 << 10
	}
	return 4096, 64 << 10
}

// TestTwoProcessScatteredRead: D reads n x 64 KiB scattered blocks from a
// helper process and verifies every byte, on every path.
func TestTwoProcessScatteredRead(t *testing.T) {
	n, size := scatterSize()
	for _, tc := range []struct {
		name  string
		mode  ErrMode
		tls   string
		nomap bool
		path  Path
	}{
		{"shm-mapped", ErrModeNone, "shm,self", false, PathMapped},
		{"shm-onesided", ErrModeNone, "shm,self", true, PathOneSided},
		{"tcp", ErrModeNone, "tcp", false, PathEmulated},
		{"peer", ErrModePeer, "", true, PathEmulated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startHelper(t, tc.mode, tc.tls, n*int(size))
			cfg := Config{ErrMode: tc.mode, DisableMapped: tc.nomap}
			if tc.tls != "" {
				cfg.UCX = map[string]string{"TLS": tc.tls}
			}
			D, err := New(cfg, transport.Handlers{})
			if err != nil {
				t.Fatal(err)
			}
			defer D.Close()
			p, r := dialHelper(t, D, h)
			dst := alloc(t, D, n*int(size))
			ops := scattered(dst, r, n, size, 99)
			start := time.Now()
			b, err := p.ReadBatch(ops)
			if err != nil {
				t.Fatal(err)
			}
			if res := wait(t, b); res.Err != nil {
				t.Fatalf("read: %v", res.Err)
			}
			el := time.Since(start)
			if b.Path() != tc.path {
				t.Errorf("path %v, want %v", b.Path(), tc.path)
			}
			for _, op := range ops {
				if !checkRange(t, dst.Bytes()[op.LocalOff:op.LocalOff+op.Len], op.RemoteOff, helperSeed) {
					break
				}
			}
			t.Logf("%d x %d KiB via %v: %.2f GB/s (first read, includes wireup)", n, size>>10, b.Path(),
				float64(uint64(n)*size)/el.Seconds()/1e9)
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			h.do("exit")
		})
	}
}

// TestTwoProcessKill kills P (SIGKILL) while D's reads are in flight.
func TestTwoProcessKill(t *testing.T) {
	const n, size = 256, 64 << 10

	// With ErrModePeer UCX detects the death: in-flight ops fail with
	// ErrDisconnected and PeerFailed fires, within the hang guard.
	t.Run("peer", func(t *testing.T) {
		h := startHelper(t, ErrModePeer, "", n*size)
		rec := newRecorder()
		D, err := New(Config{ErrMode: ErrModePeer, DisableMapped: true}, rec.handlers())
		if err != nil {
			t.Fatal(err)
		}
		defer D.Close()
		p, r, dst := connectHelper(t, D, h, n*size)
		h.do("stall") // the emulated gets below stay in flight
		b, err := p.ReadBatch(scattered(dst, r, n, size, 1))
		if err != nil {
			t.Fatal(err)
		}
		h.kill()
		res := wait(t, b)
		if !errors.Is(res.Err, transport.ErrDisconnected) || len(res.Failed) != n {
			t.Fatalf("after SIGKILL: %v (%d of %d failed)", res.Err, len(res.Failed), n)
		}
		e := rec.next(t, rec.failed, "PeerFailed")
		if e.from != p.ID() || !errors.Is(e.err, transport.ErrDisconnected) {
			t.Fatalf("PeerFailed(%v, %v)", e.from, e.err)
		}
		if _, err := p.ReadBatch(scattered(dst, r, 1, size, 1)); !errors.Is(err, transport.ErrDisconnected) {
			t.Fatalf("read after failure: %v", err)
		}
		t.Logf("failure: %v", res.Err)
	})

	// With ErrModeNone UCX reports nothing; the side channel notices (here:
	// the process exit) and calls Peer.Fail.
	t.Run("none-tcp-side-channel", func(t *testing.T) {
		h := startHelper(t, ErrModeNone, "tcp", n*size)
		rec := newRecorder()
		D, err := New(Config{UCX: tcpTLS()}, rec.handlers())
		if err != nil {
			t.Fatal(err)
		}
		defer D.Close()
		p, r, dst := connectHelper(t, D, h, n*size)
		h.do("stall")
		b, err := p.ReadBatch(scattered(dst, r, n, size, 1))
		if err != nil {
			t.Fatal(err)
		}
		h.kill() // waits for the exit: this is the side channel's signal
		p.Fail(fmt.Errorf("helper exited: %v", h.state))
		res := wait(t, b)
		if !errors.Is(res.Err, transport.ErrDisconnected) || len(res.Failed) != n {
			t.Fatalf("after Fail: %v (%d of %d failed)", res.Err, len(res.Failed), n)
		}
		if e := rec.next(t, rec.failed, "PeerFailed"); e.from != p.ID() {
			t.Fatalf("PeerFailed(%v)", e.from)
		}
	})

	// One-sided shm reads do not involve P at all: the segment stays
	// attached after P dies and the data written before stays readable.
	t.Run("none-shm-onesided-survives", func(t *testing.T) {
		h := startHelper(t, ErrModeNone, "shm,self", n*size)
		D, err := New(Config{UCX: shmTLS(), DisableMapped: true}, transport.Handlers{})
		if err != nil {
			t.Fatal(err)
		}
		defer D.Close()
		p, r, dst := connectHelper(t, D, h, n*size)
		h.kill()
		ops := scattered(dst, r, n, size, 5)
		b, err := p.ReadBatch(ops)
		if err != nil {
			t.Fatal(err)
		}
		if res := wait(t, b); res.Err != nil || b.Path() != PathOneSided {
			t.Fatalf("one-sided read after P died: %v via %v", res.Err, b.Path())
		}
		for _, op := range ops {
			if !checkRange(t, dst.Bytes()[op.LocalOff:op.LocalOff+op.Len], op.RemoteOff, helperSeed) {
				break
			}
		}
		p.Fail(errors.New("P exited"))
	})
}

// TestTwoProcessFailHook shows the side-channel hook for ErrModeNone while
// P is still alive: Peer.Fail fails in-flight batches with ErrDisconnected
// and reports PeerFailed. P runs in a helper process, stalled so that the
// emulated gets stay in flight. It must not serve them after D's endpoint is
// gone: UCX 1.13 aborts a target that replies to gets of an initiator that
// has gone away (TestTwoProcessTargetAbort), so the test makes the side
// channel's verdict true and kills P. In one process the abort would take
// the test binary with it.
func TestTwoProcessFailHook(t *testing.T) {
	const n, size = 32, 4096
	h := startHelper(t, ErrModeNone, "tcp", n*size)
	rec := newRecorder()
	D, err := New(Config{UCX: tcpTLS()}, rec.handlers())
	if err != nil {
		t.Fatal(err)
	}
	defer D.Close()
	p, r, dst := connectHelper(t, D, h, n*size)
	h.do("stall")
	defer h.kill() // before D.Close: P never serves the gets
	b, err := p.ReadBatch(scattered(dst, r, n, size, 1))
	if err != nil {
		t.Fatal(err)
	}
	if b.Path() != PathEmulated {
		t.Fatalf("path %v, want %v", b.Path(), PathEmulated)
	}
	cause := errors.New("heartbeat lost")
	p.Fail(cause)
	res := wait(t, b)
	if !errors.Is(res.Err, transport.ErrDisconnected) || !errors.Is(res.Err, cause) || len(res.Failed) != n {
		t.Fatalf("after Fail: %v (%d failed)", res.Err, len(res.Failed))
	}
	e := rec.next(t, rec.failed, "PeerFailed")
	if e.from != p.ID() || !errors.Is(e.err, transport.ErrDisconnected) {
		t.Fatalf("PeerFailed(%v, %v)", e.from, e.err)
	}
	if _, err := p.ReadBatch(scattered(dst, r, 1, size, 1)); !errors.Is(err, transport.ErrDisconnected) {
		t.Fatalf("Read after Fail: %v", err)
	}
}

// dialHelper connects D to the helper process and imports its memory.
func dialHelper(t *testing.T, D *Transport, h *helper) (*Peer, *Remote) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	p, err := D.ConnectPeer(ctx, h.hello.Addr)
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.ImportRemote(h.hello.Desc)
	if err != nil {
		t.Fatal(err)
	}
	return p, r
}

func connectHelper(t *testing.T, D *Transport, h *helper, n int) (*Peer, *Remote, *Memory) {
	t.Helper()
	p, r := dialHelper(t, D, h)
	dst := alloc(t, D, n)
	// Warm up while P progresses (wireup), and check the pattern.
	b, err := p.ReadBatch([]transport.Op{{Local: dst, Remote: r, Len: 4096}})
	if err != nil {
		t.Fatal(err)
	}
	if res := wait(t, b); res.Err != nil {
		t.Fatal(res.Err)
	}
	checkRange(t, dst.Bytes()[:4096], 0, helperSeed)
	return p, r, dst
}

// TestTwoProcessCloseInFlight closes D's peer and then D with emulated reads
// in flight to a stalled P: they fail with ErrClosed in bounded time.
func TestTwoProcessCloseInFlight(t *testing.T) {
	const n, size = 64, 4096
	for _, tc := range []struct {
		name string
		mode ErrMode
		tls  string
	}{
		{"none-tcp", ErrModeNone, "tcp"},
		{"peer", ErrModePeer, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startHelper(t, tc.mode, tc.tls, n*size)
			cfg := Config{ErrMode: tc.mode, DisableMapped: true, CloseTimeout: 500 * time.Millisecond}
			if tc.tls != "" {
				cfg.UCX = map[string]string{"TLS": tc.tls}
			}
			D, err := New(cfg, transport.Handlers{})
			if err != nil {
				t.Fatal(err)
			}
			defer D.Close()
			p, r, dst := connectHelper(t, D, h, n*size)
			h.do("stall")
			b, err := p.ReadBatch(scattered(dst, r, n, size, 1))
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			res := wait(t, b)
			if !errors.Is(res.Err, transport.ErrClosed) || len(res.Failed) != n {
				t.Fatalf("after Peer.Close: %v (%d of %d failed)", res.Err, len(res.Failed), n)
			}
			if _, err := p.ReadBatch(scattered(dst, r, 1, size, 1)); !errors.Is(err, transport.ErrClosed) {
				t.Fatalf("read on closed peer: %v", err)
			}

			p2, r2, _ := func() (*Peer, *Remote, *Memory) {
				ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
				defer cancel()
				p2, err := D.ConnectPeer(ctx, h.hello.Addr)
				if err != nil {
					t.Fatal(err)
				}
				r2, err := p2.ImportRemote(h.hello.Desc)
				if err != nil {
					t.Fatal(err)
				}
				return p2, r2, nil
			}()
			b, err = p2.ReadBatch(scattered(dst, r2, n, size, 2))
			if err != nil {
				t.Fatal(err)
			}
			if err := D.Close(); err != nil {
				t.Fatal(err)
			}
			if res := wait(t, b); !errors.Is(res.Err, transport.ErrClosed) {
				t.Fatalf("after Transport.Close: %v", res.Err)
			}
			// P still holds D's unserved get requests. Letting it serve them
			// now that D is gone aborts P inside UCX 1.13
			// (ucp_request_try_send: "unexpected error"); see
			// TestTwoProcessTargetAbort. Kill it instead.
			h.kill()
		})
	}
}

func firstLine(s, substr string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}

// TestTwoProcessTargetAbort documents a UCX 1.13 defect: a target that
// replies to emulated gets of an initiator that has gone away aborts in
// ucp_request_try_send ("Fatal: unexpected error: Endpoint timeout").
// The test passes when P survives (a fixed UCX), is skipped when P aborts
// with that message (UCX 1.13 here), and fails on any other outcome.
func TestTwoProcessTargetAbort(t *testing.T) {
	const n, size = 64, 4096
	h := startHelper(t, ErrModeNone, "tcp", n*size)
	D, err := New(Config{UCX: tcpTLS(), DisableMapped: true, CloseTimeout: 100 * time.Millisecond}, transport.Handlers{})
	if err != nil {
		t.Fatal(err)
	}
	p, r, dst := connectHelper(t, D, h, n*size)
	h.do("stall")
	if _, err := p.ReadBatch(scattered(dst, r, n, size, 1)); err != nil {
		t.Fatal(err)
	}
	D.Close()
	if _, err := fmt.Fprintln(h.in, "unstall"); err != nil {
		t.Fatal(err)
	}
	_, _ = h.readLine()
	// Give P a command that needs its progress goroutine: if P aborted,
	// the pipe breaks or the process is gone.
	_, _ = fmt.Fprintln(h.in, "exit")
	select {
	case <-h.done:
	case <-time.After(hangGuard):
		t.Fatal("helper neither exited nor aborted")
	}
	if !h.state.Success() && strings.Contains(h.stderr.String(), "Fatal: unexpected error") {
		t.Skipf("UCX defect reproduced: the target aborted (%v) serving gets of a closed initiator:\n%s",
			h.state, firstLine(h.stderr.String(), "Fatal"))
	}
	if !h.state.Success() {
		t.Fatalf("helper exited with %v", h.state)
	}
}
