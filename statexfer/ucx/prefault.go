package ucx

import (
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// prefaultChunk is how much of a mapped range one madvise call populates:
// the peer's rkeys wait for at most one chunk when it closes.
const prefaultChunk = 4 << 20

// prefaulter populates the page tables of mapped peer ranges, one range
// at a time on one goroutine per process (madvise blocks its thread: a
// goroutine per range, or per transport, would take a thread each and
// every core from the transfers).
type prefaulter struct {
	mu      sync.Mutex
	queue   []prefaultJob
	running bool
}

// prefaults is the process's prefaulter: page tables are per process.
var prefaults prefaulter

type prefaultJob struct {
	p          *Peer
	start, end uintptr
}

// prefault fills this process's page tables for a peer's range that
// ucp_rkey_ptr mapped here (madvise MADV_POPULATE_READ, Linux 5.14), in
// the background: without it, the first mapped copies from a new peer
// take a page fault per 4 KiB page of its memory (measured: a first
// gpt-oss-120b 4 -> 8 transfer at 8,192 tokens moved 0.2 GB/s, later ones
// 6-11 GB/s). Chunks are populated under the peer's mapping lock for
// reading and a peer whose rkeys were destroyed is skipped, so it never
// touches a range that is gone. Errors (an older kernel: EINVAL) only
// leave the faults to the copies.
func (p *Peer) prefault(ptr unsafe.Pointer, n uint64) {
	if p.t.cfg.NoPrefault {
		return
	}
	page := uintptr(os.Getpagesize())
	j := prefaultJob{p: p, start: uintptr(ptr) &^ (page - 1), end: (uintptr(ptr) + uintptr(n) + page - 1) &^ (page - 1)}
	f := &prefaults
	f.mu.Lock()
	f.queue = append(f.queue, j)
	start := !f.running
	f.running = true
	f.mu.Unlock()
	if start {
		go f.run()
	}
}

func (f *prefaulter) run() {
	for {
		f.mu.Lock()
		if len(f.queue) == 0 {
			f.running = false
			f.mu.Unlock()
			return
		}
		j := f.queue[0]
		f.queue = f.queue[1:]
		f.mu.Unlock()
		j.populate()
	}
}

func (j prefaultJob) populate() {
	for a := j.start; a < j.end; a += prefaultChunk {
		l := min(uintptr(prefaultChunk), j.end-a)
		j.p.mapMu.RLock()
		gone := j.p.mapGone
		var errno unix.Errno
		if !gone {
			_, _, errno = unix.Syscall(unix.SYS_MADVISE, a, l, unix.MADV_POPULATE_READ)
		}
		j.p.mapMu.RUnlock()
		if gone || errno != 0 {
			return
		}
	}
}
