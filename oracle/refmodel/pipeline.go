package refmodel

import (
	"context"
	"fmt"
	"runtime"
	"sync"

	"github.com/hybridxfer/hybridxfer/oracle"
)

// A split prefill runs the target layers on two goroutines as a
// pipeline: the first computes layers targets[:k] of position t+1 while
// the second computes targets[k:], the LM head and the drafts of
// position t. Layer l of position t needs only position t's hidden state
// after layer l-1 and layer l's own state of earlier positions, so each
// goroutine keeps its layers' state in a cache of its own (the layer sets
// are disjoint) and hands the hidden state on; every layer computes the
// same operations on the same values as in one goroutine, so the bits do
// not depend on the schedule.
//
// The store sees what position-by-position Forward calls would have left
// at every point: the second goroutine writes each position's state, in
// layer order, only after both halves of the position computed it, and
// keeps the recurrent state of the last position it wrote (the first
// goroutine may be ahead of it) for the final flush. Store reads (earlier
// positions, on each layer's first position) and writes are serialized by
// one mutex.

// splitMin is the number of positions from which a prefill splits its
// layers across two goroutines: below it the hand-offs cost more than
// they save.
const splitMin = 16

// lockedStore serializes a split prefill's store access.
type lockedStore struct {
	mu sync.Mutex
	s  Store
}

func (l *lockedStore) Read(c oracle.Coord, dst []float32) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.Read(c, dst)
}

func (l *lockedStore) Write(c oracle.Coord, src []float32) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s.Write(c, src)
}

// handoff is position t after the first half of the layers.
type handoff struct {
	x, aux          []float32
	perToken, fixed []pending
	rec             []recUpdate
	err             error
}

// splitAt is the decoder-layer boundary in targets at which a prefill of
// tokens[from:to] splits, balancing the two halves' estimated cost
// (the second half also runs the LM head, the drafts and the store
// writes); 0 when the prefill runs in one goroutine.
func (m *Model) splitAt(tokens []uint32, from, to int) int {
	if to-from < splitMin || runtime.GOMAXPROCS(0) < 2 {
		return 0
	}
	for _, tok := range tokens[from:to] {
		if tok >= Vocab {
			return 0 // one goroutine fails at the first such position
		}
	}
	mid := (from + to) / 2
	costs := make([]int, len(m.targets))
	total := 0
	for i, li := range m.targets {
		costs[i] = m.layerCost(li, mid)
		total += costs[i]
	}
	tail := Vocab*Hidden + writeCost*len(m.targets)
	for _, li := range m.drafts {
		tail += m.layerCost(li, mid)
	}
	best, bestCost, head, done := 0, total+tail, 0, 0
	for _, k := range m.splitPoints() {
		for ; done < k; done++ {
			head += costs[done]
		}
		if c := max(head, total-head+tail); c < bestCost {
			best, bestCost = k, c
		}
	}
	return best
}

// splitPoints are the decoder-layer boundaries inside targets: the k in
// (0, len(targets)) where targets[k] is not a parallel layer.
func (m *Model) splitPoints() []int {
	var ks []int
	for k := 1; k < len(m.targets); k++ {
		if !m.spec.Layers[m.targets[k]].Parallel {
			ks = append(ks, k)
		}
	}
	return ks
}

// Rough costs, in multiply-adds, of what a position does besides the
// layers' projections: one key of one attention head (dot product,
// softmax weight, weighted values), one recurrent state head (gates,
// normalization, the update) and one layer's store writes.
const (
	keyCost       = 17
	stateHeadCost = 40
	writeCost     = 60
)

// layerCost estimates layer li's cost at position t.
func (m *Model) layerCost(li, t int) int {
	l := &m.spec.Layers[li]
	w := &m.layers[li]
	keys := t - l.LiveStart(t) + 1
	switch {
	case w.attn != nil:
		a := l.Attention
		return a.KVHeads * ((2*a.HeadDim+2*a.VDim())*Hidden + keys*keyCost)
	case w.tok != nil:
		return (2*w.tok.n+w.tok.nv)*Hidden + keys*keyCost
	default:
		r := w.rec
		c := 2*r.channels*Hidden + r.channels*(r.rows+1)
		for si := range r.states {
			s := &r.states[si]
			c += len(s.heads) * (2*Hidden + stateFeatures*(2*s.d2+s.d1) + 3*s.d1*s.d2 + stateHeadCost + Hidden*s.d1)
		}
		return c
	}
}

// prefillSplit is prefill with the target layers split at k (splitAt);
// cache is the caller's, empty: on success it receives both halves'
// state, as one goroutine would have left it.
func (m *Model) prefillSplit(ctx context.Context, s Store, tokens []uint32, from, to, k int, cache *runCache) (uint32, error) {
	ls := &lockedStore{s: s}
	first, second := newRunCache(s), newRunCache(s)
	first.split, second.split = true, true
	handoffs := make(chan handoff, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// halt stops the first goroutine and waits for it: before the flush
	// below writes the store unlocked, and on a panic here.
	halt := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer halt()
	wg.Go(func() {
		for t := from; t < to; t++ {
			st := &step{m: m, s: ls, t: t, cache: first}
			h := handoff{x: m.embedding(tokens[t])}
			h.aux, h.err = st.targets(0, k, h.x, nil)
			if h.err == nil {
				st.keep()
				h.perToken, h.fixed, h.rec = st.perToken, st.fixed, st.recUpdates
			}
			select {
			case handoffs <- h:
			case <-stop:
				return
			}
			if h.err != nil {
				return
			}
		}
	})
	// committed: per layer, the recurrent state of the last position
	// written; dirty: the store lacks it (written through only on each
	// cache's first position).
	committed := make([]recUpdate, len(m.spec.Layers))
	dirty := false
	var next uint32
	err := func() error {
		for t := from; t < to; t++ {
			if (t-from)%prefillCheckEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			h := <-handoffs
			if h.err != nil {
				return fmt.Errorf("position %d: %w", t, h.err)
			}
			st := &step{m: m, s: ls, t: t, cache: second}
			aux, err := st.targets(k, len(m.targets), h.x, h.aux)
			if err != nil {
				return fmt.Errorf("position %d: %w", t, err)
			}
			out, err := st.finish(h.x, aux)
			if err != nil {
				return fmt.Errorf("position %d: %w", t, err)
			}
			if err := m.write(ls, t, h.perToken, st.perToken, h.fixed, st.fixed); err != nil {
				return fmt.Errorf("position %d: %w", t, err)
			}
			st.keep()
			for _, half := range []struct {
				rec     []recUpdate
				through bool
			}{{h.rec, len(h.fixed) > 0}, {st.recUpdates, len(st.fixed) > 0}} {
				for _, u := range half.rec {
					committed[u.layer.li] = u
				}
				dirty = dirty || len(half.rec) > 0 && !half.through
			}
			next = out.Next
		}
		return nil
	}()
	halt()
	if err != nil {
		if dirty {
			for _, u := range committed {
				if u.layer == nil {
					continue
				}
				if ferr := u.layer.write(s, u.conv, u.states); ferr != nil {
					return 0, fmt.Errorf("%w; flushing: %w", err, ferr)
				}
			}
		}
		return 0, err
	}
	cache.adopt(first, dirty)
	cache.adopt(second, dirty)
	return next, nil
}

// adopt moves a split prefill's half into the empty cache tc (the halves
// hold disjoint layers); dirty: the store lacks the recurrent state.
func (tc *runCache) adopt(half *runCache, dirty bool) {
	for k, c := range half.cols {
		tc.cols[k] = c
	}
	for k, a := range half.arrays {
		if tc.arrays == nil {
			tc.arrays = map[headKey]*keyArray{}
		}
		tc.arrays[k] = a
	}
	if len(half.rec) > len(tc.rec) {
		tc.rec = append(tc.rec, make([]*recLayer, len(half.rec)-len(tc.rec))...)
	}
	for li, rl := range half.rec {
		if rl != nil {
			tc.rec[li] = rl
		}
	}
	tc.wrote = tc.wrote || half.wrote
	tc.dirty = tc.dirty || dirty
}

// empty reports whether the cache holds nothing yet.
func (tc *runCache) empty() bool {
	return len(tc.cols) == 0 && len(tc.arrays) == 0 && len(tc.rec) == 0
}
