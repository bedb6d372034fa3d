package refmodel

import (
	"fmt"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle"
)

// runCache carries state between the consecutive positions of one run
// (a Prefill or Generate call), so that position t does not read every
// earlier position's state from the store again: a prefill of n
// positions reads O(n) vectors from the store, not O(n²), and writes the
// recurrent state once, not n times.
//
// Per-token vectors (K, V, their scales, MLA and indexer vectors) are
// kept write-through: a value enters the cache only after the store
// accepted it or returned it on a read, and later reads of that position
// come from the cache. That is exact: a per-token coordinate is the
// store's own (a SlotStore view routes only recurrent state), and every
// store writes float32 bits and reads them back unchanged.
//
// Recurrent state (conv rows, state heads) is carried only on a store
// known to read back what it wrote at the same coordinate (roundTripper),
// and write-back: the run's first position writes it through to the store
// (so a write the store refuses fails where it always did), later
// positions keep it in the cache, and flush writes the newest values once
// when the run ends, with or without an error. Every position writes the
// same recurrent coordinates, so after flush the store holds exactly what
// position-by-position writes would have left.
//
// What the cache cannot see is another writer changing the store during
// the run: the caller owns the request's blocks for the call.
type runCache struct {
	cols map[colKey]*column
	// recOK: the store round-trips recurrent state; wrote: a position of
	// this run has written its recurrent state through; dirty: rec holds
	// values the store does not.
	recOK, wrote, dirty bool
	// perToken, fixed: the pending lists of the run's positions, reused
	// (a step's lists are dead once it committed).
	perToken, fixed []pending
	// arrays: every attention head's keys and values so far (keyarray.go);
	// jobs: attention's per-head scratch, reused like the pending lists.
	arrays map[headKey]*keyArray
	jobs   []headJob
	// rs: the recurrent layers' scratch, reused by every position.
	rs recScratch
	// rec[layer]: the newest recurrent state of each recurrent layer.
	rec []*recLayer
	// split: the cache of one of a split prefill's two goroutines
	// (pipeline.go): its heads run serially, and a position's recurrent
	// buffers are never reused, since the goroutine that writes the
	// store holds them until it has.
	split bool
}

// recLayer is one recurrent layer's newest state in a run.
type recLayer struct {
	li      int
	conv    []float32      // all channels' rows, channel-major; nil until set
	convAt  []oracle.Coord // per channel, its coordinate (for flush)
	rows    int
	states  [][]float32 // per state head, numbered across state tensors
	stateAt []oracle.Coord
	// slab: the state heads' values (states are slices of it); spare,
	// spareSlab: the conv rows and slab replaced at the last position,
	// which nothing reads any more: the next position writes its state
	// into them (buffer, stateSlab). ups: the header slice of the pending
	// update's states, reused likewise.
	slab      []float32
	spare     []float32
	spareSlab []float32
	ups       [][]float32
}

// buffer returns n values for a position's new conv rows: the spare
// buffer when it has room (its old values are overwritten), else a new
// one; on a nil recLayer (no cache) always a new one.
func (rl *recLayer) buffer(n int) []float32 {
	if rl == nil || cap(rl.spare) < n {
		return make([]float32, n)
	}
	b := rl.spare[:n]
	rl.spare = nil
	return b
}

// stateSlab is buffer for the n values of all state heads: zeroed, as a
// new one is.
func (rl *recLayer) stateSlab(n int) []float32 {
	if rl == nil || cap(rl.spareSlab) < n {
		return make([]float32, n)
	}
	b := rl.spareSlab[:n]
	rl.spareSlab = nil
	clear(b)
	return b
}

// updates returns the header slice for a position's heads new states.
func (rl *recLayer) updates(heads int) [][]float32 {
	if rl == nil || cap(rl.ups) < heads {
		return make([][]float32, heads)
	}
	return rl.ups[:heads]
}

// setCoords records the coordinates of layer li's conv channels and
// state heads, in the numbering step.recurrent uses.
func (rl *recLayer) setCoords(li int, r *groups.RecurrentSpec, segOff []int, rows int) {
	rl.rows = rows
	n := 0
	for _, s := range r.Segments {
		n += s.Channels()
	}
	rl.convAt = make([]oracle.Coord, n)
	for si, s := range r.Segments {
		for ch := 0; ch < s.Channels(); ch++ {
			rl.convAt[segOff[si]+ch] = ConvCoord(li, si, ch, 0)
		}
	}
	rl.stateAt = rl.stateAt[:0]
	for si := range r.States {
		for hd := 0; hd < r.States[si].Heads; hd++ {
			rl.stateAt = append(rl.stateAt, StateCoord(li, si, hd))
		}
	}
}

// recUpdate is the recurrent state one position leaves in one layer.
type recUpdate struct {
	layer  *recLayer
	conv   []float32
	slab   []float32 // the states' values
	states [][]float32
}

// colKey names one column: a layer's part and head (Index), every position.
type colKey struct {
	layer int
	part  oracle.Part
	index int
}

// column holds vectors by position; nil where not yet seen.
type column struct{ at [][]float32 }

// newRunCache returns an empty cache for a run on s.
func newRunCache(s Store) *runCache {
	tc := &runCache{cols: map[colKey]*column{}}
	_, tc.recOK = s.(roundTripper)
	return tc
}

// roundTripper is a store known to read back at a coordinate what it
// last wrote there: RankStore, MapStore and stores that embed them (and
// so must keep that promise); not a slot view, which reads one slot and
// writes another.
type roundTripper interface{ roundTrips() }

func (*RankStore) roundTrips() {}
func (*MapStore) roundTrips()  {}

// recLayer returns layer li's state in the run (heads state heads),
// creating it; nil when the cache does not carry recurrent state.
func (tc *runCache) recLayer(li, heads int) *recLayer {
	if !tc.recOK {
		return nil
	}
	if li >= len(tc.rec) {
		tc.rec = append(tc.rec, make([]*recLayer, li+1-len(tc.rec))...)
	}
	if tc.rec[li] == nil {
		tc.rec[li] = &recLayer{li: li, states: make([][]float32, heads)}
	}
	return tc.rec[li]
}

// carrying reports whether a position's recurrent state goes to the cache
// only (the run's first position has written it through).
func (tc *runCache) carrying() bool { return tc.recOK && tc.wrote }

// apply records a committed position's recurrent state; wroteThrough
// says the store has it too (else the cache holds what the store lacks).
func (tc *runCache) apply(ups []recUpdate, wroteThrough bool) {
	for _, u := range ups {
		rl := u.layer
		rl.spare, rl.conv = rl.conv, u.conv
		rl.spareSlab, rl.slab = rl.slab, u.slab
		copy(rl.states, u.states)
		rl.ups = u.states
		if tc.split {
			rl.spare, rl.spareSlab, rl.ups = nil, nil, nil
		}
	}
	if len(ups) == 0 {
		return
	}
	if !wroteThrough {
		tc.dirty = true
	}
	tc.wrote = true
}

// flush writes the recurrent state the store does not hold yet, layer by
// layer: conv channels, then state heads.
func (tc *runCache) flush(s Store) error {
	if !tc.dirty {
		return nil
	}
	for _, rl := range tc.rec {
		if rl == nil || rl.conv == nil {
			continue
		}
		if err := rl.write(s, rl.conv, rl.states); err != nil {
			return err
		}
	}
	tc.dirty = false
	return nil
}

// write writes the layer's recurrent state conv and states (in its
// numbering) to s: conv channels, then state heads.
func (rl *recLayer) write(s Store, conv []float32, states [][]float32) error {
	R := rl.rows
	for c, at := range rl.convAt {
		if err := s.Write(at, conv[c*R:(c+1)*R]); err != nil {
			return fmt.Errorf("recurrent state %+v: %w", at, err)
		}
	}
	for k, at := range rl.stateAt {
		if err := s.Write(at, states[k]); err != nil {
			return fmt.Errorf("recurrent state %+v: %w", at, err)
		}
	}
	return nil
}

// col returns the column of c (its Pos is ignored), creating it.
func (tc *runCache) col(c oracle.Coord) *column {
	k := colKey{c.Layer, c.Part, c.Index}
	col := tc.cols[k]
	if col == nil {
		col = &column{}
		tc.cols[k] = col
	}
	return col
}

func (col *column) get(pos int) []float32 {
	if pos < len(col.at) {
		return col.at[pos]
	}
	return nil
}

func (col *column) put(pos int, v []float32) {
	if pos >= len(col.at) {
		col.at = append(col.at, make([][]float32, pos+1-len(col.at))...)
	}
	col.at[pos] = v
}

// readVia returns c's vector of n values from col, reading the store on a
// miss. The returned slice is shared with the cache: callers do not
// modify it.
func (st *step) readVia(col *column, c oracle.Coord, n int) ([]float32, error) {
	if v := col.get(c.Pos); v != nil {
		return v, nil
	}
	v, err := st.read(c, n)
	if err != nil {
		return nil, err
	}
	col.put(c.Pos, v)
	return v, nil
}
