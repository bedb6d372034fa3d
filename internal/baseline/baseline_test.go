package baseline

import (
	"bytes"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"
)

func TestLimitCopies(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 7, 4095, 4096, 4097, 3*4096 + 5, 1<<20 + 333} {
		for _, workers := range []int{-1, 0, 1, 2, 3, 8, 1000} {
			src := make([]byte, n)
			for i := range src {
				src[i] = byte(rng.Uint32())
			}
			dst := make([]byte, n+16) // longer dst: the tail stays untouched
			for i := range dst {
				dst[i] = 0xee
			}
			Limit(dst, src, workers)
			if !bytes.Equal(dst[:n], src) {
				t.Fatalf("n=%d workers=%d: copy differs", n, workers)
			}
			for i := n; i < len(dst); i++ {
				if dst[i] != 0xee {
					t.Fatalf("n=%d workers=%d: byte %d past the end written", n, workers, i)
				}
			}
		}
	}
}

// LimitSpans copies min(len(dst[i]), len(src[i])) bytes of every span,
// whatever the worker count, and nothing past them.
func TestLimitSpans(t *testing.T) {
	for _, w := range []int{1, 2, 3, 7, 64} {
		var dsts, srcs [][]byte
		for i, n := range []int{1, 4095, 4097, 9<<20 + 3, 0, 65536} {
			src := make([]byte, n)
			for k := range src {
				src[k] = byte(k*7 + i)
			}
			dst := make([]byte, n+100)
			for k := range dst {
				dst[k] = 0xee
			}
			if i == 5 {
				dst = dst[:n/2] // shorter dst: only its length is copied
			}
			dsts, srcs = append(dsts, dst), append(srcs, src)
		}
		LimitSpans(dsts, srcs, w)
		for i := range srcs {
			n := min(len(dsts[i]), len(srcs[i]))
			if !bytes.Equal(dsts[i][:n], srcs[i][:n]) {
				t.Fatalf("workers=%d span %d: copy differs", w, i)
			}
			for k := n; k < len(dsts[i]); k++ {
				if dsts[i][k] != 0xee {
					t.Fatalf("workers=%d span %d: byte %d past the copy written", w, i, k)
				}
			}
		}
	}
}

func TestTCPStreamMovesN(t *testing.T) {
	for _, c := range []struct {
		n     int64
		chunk int
	}{{0, 0}, {1, 0}, {12345, 1000}, {3<<20 + 17, 0}, {1 << 20, 4096}} {
		d, got, err := tcpStream("127.0.0.1:0", c.n, c.chunk)
		if err != nil {
			t.Fatalf("n=%d chunk=%d: %v", c.n, c.chunk, err)
		}
		if got != c.n {
			t.Fatalf("n=%d chunk=%d: reader counted %d bytes", c.n, c.chunk, got)
		}
		if d < 0 {
			t.Fatalf("n=%d: negative time %v", c.n, d)
		}
	}
	if _, err := TCPStream(1<<16, 0); err != nil {
		t.Fatal(err)
	}
}

func TestTCPStreamCannotListen(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	done := make(chan error, 1)
	go func() {
		_, _, err := tcpStream(busy.Addr().String(), 1<<20, 0)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "baseline") {
			t.Fatalf("listening on a busy port: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("tcpStream hung on a port it cannot listen on")
	}
	if _, _, err := tcpStream("256.0.0.1:0", 1, 0); err == nil {
		t.Fatal("bad address: no error")
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		v    []float64
		want float64
	}{
		{nil, 0},
		{[]float64{}, 0},
		{[]float64{4}, 4},
		{[]float64{3, 1, 2}, 2},
		{[]float64{5, 1, 4, 2}, 3},
		{[]float64{9, 9, 1, 1, 5}, 5},
	} {
		in := append([]float64(nil), c.v...)
		if got := Median(c.v); got != c.want {
			t.Fatalf("Median(%v) = %v, want %v", c.v, got, c.want)
		}
		for i := range in {
			if in[i] != c.v[i] {
				t.Fatalf("Median modified its input: %v -> %v", in, c.v)
			}
		}
	}
}

func TestGBps(t *testing.T) {
	if got := GBps(2e9, time.Second); got != 2 {
		t.Fatalf("GBps(2e9, 1s) = %v", got)
	}
	if GBps(1, 0) != 0 || GBps(1, -time.Second) != 0 {
		t.Fatal("GBps with d <= 0 is not 0")
	}
}
