package session

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// poolAlign is the alignment of every staging range (a cache line).
const poolAlign = 64

// rangeSet is a first-fit allocator of byte ranges [0, size): the pure core
// of a staging pool. Ranges are aligned to poolAlign; a range is freed
// exactly once (a second free, or a free of a range never handed out, is an
// error, not a corruption).
type rangeSet struct {
	size int64
	used []span // sorted by off, disjoint
}

type span struct{ off, n int64 }

func alignUp(n int64) int64 { return (n + poolAlign - 1) / poolAlign * poolAlign }

// alloc returns the offset of n free bytes, or false when no gap fits.
func (s *rangeSet) alloc(n int64) (int64, bool) {
	if n <= 0 {
		return 0, false
	}
	n = alignUp(n)
	at := int64(0)
	for i, u := range s.used {
		if u.off-at >= n {
			s.used = slices.Insert(s.used, i, span{at, n})
			return at, true
		}
		at = u.off + u.n
	}
	if s.size-at >= n {
		s.used = append(s.used, span{at, n})
		return at, true
	}
	return 0, false
}

// free releases the range that starts at off.
func (s *rangeSet) free(off int64) error {
	i, ok := slices.BinarySearchFunc(s.used, off, func(u span, off int64) int {
		switch {
		case u.off < off:
			return -1
		case u.off > off:
			return 1
		}
		return 0
	})
	if !ok {
		return fmt.Errorf("%w: free of staging offset %d, which is not allocated", ErrStaging, off)
	}
	s.used = slices.Delete(s.used, i, i+1)
	return nil
}

// inUse is the number of bytes handed out.
func (s *rangeSet) inUse() int64 {
	var n int64
	for _, u := range s.used {
		n += u.n
	}
	return n
}

// Pool hands out per-request ranges of one rank's staging buffer. A range
// belongs to one request in flight, never to two; Get blocks while the
// pool is full (backpressure) until a range is freed or ctx ends; a request
// larger than the whole pool fails at once.
type Pool struct {
	mu    sync.Mutex
	set   rangeSet
	freed chan struct{} // closed and replaced on every free
}

// NewPool returns a pool over size bytes.
func NewPool(size int64) *Pool {
	return &Pool{set: rangeSet{size: size}, freed: make(chan struct{})}
}

// Size is the pool's capacity.
func (p *Pool) Size() int64 { return p.set.size }

// InUse is the number of bytes handed out now.
func (p *Pool) InUse() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.set.inUse()
}

// TryGet returns the offset of n bytes, or ErrStagingFull (retry later) or
// ErrStaging (never fits).
func (p *Pool) TryGet(n int64) (int64, error) {
	if alignUp(n) > p.set.size {
		return 0, fmt.Errorf("%w: %d bytes requested, the pool holds %d (raise the staging size)", ErrStaging, n, p.set.size)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if off, ok := p.set.alloc(n); ok {
		return off, nil
	}
	return 0, fmt.Errorf("%w: %d bytes requested, %d of %d in use", ErrStagingFull, n, p.set.inUse(), p.set.size)
}

// Get is TryGet that waits while the pool is full.
func (p *Pool) Get(ctx context.Context, n int64) (int64, error) {
	for {
		p.mu.Lock()
		wait := p.freed
		p.mu.Unlock()
		off, err := p.TryGet(n)
		if err == nil || !isFull(err) {
			return off, err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return 0, fmt.Errorf("%w: waiting for %d bytes: %w", ErrStagingFull, n, ctx.Err())
		}
	}
}

// Put frees the range at off.
func (p *Pool) Put(off int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.set.free(off); err != nil {
		return err
	}
	close(p.freed)
	p.freed = make(chan struct{})
	return nil
}
