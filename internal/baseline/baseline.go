package baseline

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hybridxfer/hybridxfer/kernels"
)

// pageSize is the alignment of Limit's chunks.
const pageSize = 4 << 10

// maxChunk bounds one piece of work of LimitSpans.
const maxChunk = 8 << 20

// Limit copies src into dst (len(dst) must be at least len(src)) the fastest
// way this package knows: LimitSpans of the one span.
// Limit panics if dst is shorter than src.
func Limit(dst, src []byte, workers int) time.Duration {
	if len(dst) < len(src) {
		panic(fmt.Sprintf("baseline.Limit: dst of %d bytes is shorter than src of %d", len(dst), len(src)))
	}
	return LimitSpans([][]byte{dst}, [][]byte{src}, workers)
}

// LimitSpans copies every src[i] into dst[i] (min of the two lengths) the
// fastest way this machine does: with kernels.Memmove (non-temporal
// stores for large copies) on workers goroutines (runtime.GOMAXPROCS(0)
// when workers <= 0), the spans cut at 4 KiB multiples into pieces of at
// most 8 MiB and about a worker's share, which the goroutines take in
// turn. The goroutines are started before the clock; it runs from
// releasing them until the last piece is copied.
func LimitSpans(dst, src [][]byte, workers int) time.Duration {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	total := 0
	for i := range src {
		total += min(len(dst[i]), len(src[i]))
	}
	if total == 0 {
		return 0
	}
	per := min(maxChunk, ((total+workers-1)/workers+pageSize-1)/pageSize*pageSize)
	type piece struct{ dst, src []byte }
	var work []piece
	for i := range src {
		n := min(len(dst[i]), len(src[i]))
		for lo := 0; lo < n; lo += per {
			hi := min(lo+per, n)
			work = append(work, piece{dst[i][lo:hi], src[i][lo:hi]})
		}
	}
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		ready sync.WaitGroup
		start = make(chan struct{})
	)
	workers = min(workers, len(work))
	wg.Add(workers)
	ready.Add(workers)
	for range workers {
		go func() {
			defer wg.Done()
			ready.Done()
			<-start
			for {
				k := int(next.Add(1)) - 1
				if k >= len(work) {
					return
				}
				kernels.Memmove(work[k].dst, work[k].src)
			}
		}()
	}
	ready.Wait()
	t0 := time.Now()
	close(start)
	wg.Wait()
	return time.Since(t0)
}

// DefaultChunk is TCPStream's write size when chunk <= 0.
const DefaultChunk = 1 << 20

// TCPStream moves n bytes over one loopback TCP connection (127.0.0.1, a
// listener on an ephemeral port) and returns the time from the first write
// until the reader has received all n bytes. Connection setup is not
// timed. The writer writes chunk bytes at a time (DefaultChunk when chunk
// <= 0) from a pre-touched buffer; the reader reads into a pre-touched
// buffer of the same size with io.ReadFull. Both ends set TCP_NODELAY;
// socket buffer sizes are the kernel's defaults (SO_SNDBUF/SO_RCVBUF are
// not set, so autotuning applies). It fails, rather than hangs, when it
// cannot listen, connect or finish within a deadline that grows with n.
func TCPStream(n int64, chunk int) (time.Duration, error) {
	d, _, err := tcpStream("127.0.0.1:0", n, chunk)
	return d, err
}

// tcpStream is TCPStream listening on addr; it also returns the bytes the
// reader counted.
func tcpStream(addr string, n int64, chunk int) (time.Duration, int64, error) {
	if n < 0 {
		return 0, 0, fmt.Errorf("baseline: TCPStream of %d bytes", n)
	}
	if chunk <= 0 {
		chunk = DefaultChunk
	}
	if int64(chunk) > n && n > 0 {
		chunk = int(n)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return 0, 0, fmt.Errorf("baseline: tcp stream: %w", err)
	}
	defer ln.Close()
	// Generous: one minute plus n at 50 MB/s.
	deadline := time.Now().Add(time.Minute + time.Duration(n/50e6)*time.Second)

	type readResult struct {
		end time.Time
		got int64
		err error
	}
	accepted := make(chan net.Conn, 1)
	done := make(chan readResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- readResult{err: fmt.Errorf("accept: %w", err)}
			close(accepted)
			return
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		_ = c.SetDeadline(deadline)
		defer c.Close() // also unblocks a writer when reading failed
		buf := touched(chunk, 0)
		accepted <- c
		var got int64
		for got < n {
			k, err := io.ReadFull(c, buf[:min(int64(len(buf)), n-got)])
			got += int64(k)
			if err != nil {
				done <- readResult{got: got, err: fmt.Errorf("read after %d of %d bytes: %w", got, n, err)}
				return
			}
		}
		done <- readResult{end: time.Now(), got: got}
	}()

	dialer := net.Dialer{Deadline: deadline}
	w, err := dialer.Dial("tcp", ln.Addr().String())
	if err != nil {
		ln.Close()
		<-done
		return 0, 0, fmt.Errorf("baseline: tcp stream: %w", err)
	}
	defer w.Close()
	if tc, ok := w.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	_ = w.SetDeadline(deadline)
	buf := touched(chunk, 0xa5)
	r, ok := <-accepted
	if !ok {
		res := <-done
		return 0, 0, fmt.Errorf("baseline: tcp stream: %w", res.err)
	}
	t0 := time.Now()
	var werr error
	for sent := int64(0); sent < n; {
		k, err := w.Write(buf[:min(int64(len(buf)), n-sent)])
		sent += int64(k)
		if err != nil {
			werr = fmt.Errorf("write after %d of %d bytes: %w", sent, n, err)
			r.Close() // the reader must not wait for bytes that never come
			break
		}
	}
	res := <-done
	if err := errors.Join(werr, res.err); err != nil {
		return 0, res.got, fmt.Errorf("baseline: tcp stream: %w", err)
	}
	return max(0, res.end.Sub(t0)), res.got, nil // n == 0: the reader was done before the clock
}

// touched returns a buffer of n bytes with every page written.
func touched(n int, b byte) []byte {
	buf := make([]byte, n)
	for i := range buf {
		buf[i] = b ^ byte(i)
	}
	return buf
}

// Median returns the median of v (the mean of the middle two for an even
// count), 0 for an empty v. v is not modified.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// GBps is bytes per d in 1e9 bytes per second; 0 when d <= 0.
func GBps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / d.Seconds() / 1e9
}
