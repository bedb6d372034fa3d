package refmodel

import (
	"fmt"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle"
)

// Store holds one request's state, addressed by global coordinates (see
// VectorLen for the coordinates and their vector lengths). Read fills dst
// with the vector at c; a coordinate whose state is absent is
// ErrMissingState. Write stores src at c. Neither keeps dst or src.
type Store interface {
	Read(c oracle.Coord, dst []float32) error
	Write(c oracle.Coord, src []float32) error
}

// MapStore is the obviously correct Store: one map entry per vector (per
// conv element), nothing about ranks, blocks or layouts. Reading what was
// never written is ErrMissingState. Not safe for concurrent use.
type MapStore struct {
	spec    *groups.Model
	m       map[oracle.Coord][]float32
	scratch map[int]map[oracle.Coord][]float32 // recurrent state of scratch slot k (1..)
}

// NewMapStore returns an empty store for spec's coordinates.
func NewMapStore(spec *groups.Model) *MapStore {
	return &MapStore{spec: spec, m: map[oracle.Coord][]float32{}, scratch: map[int]map[oracle.Coord][]float32{}}
}

// Read implements Store.
func (s *MapStore) Read(c oracle.Coord, dst []float32) error {
	return s.read(s.m, c, dst)
}

// Write implements Store.
func (s *MapStore) Write(c oracle.Coord, src []float32) error {
	return s.write(s.m, c, src)
}

// Slots implements SlotStore: scratch slots are maps of their own.
func (s *MapStore) Slots(from, to int) Store {
	return slotView{from: from, to: to,
		read: func(k int, c oracle.Coord, dst []float32) error { return s.read(s.slot(k), c, dst) },
		write: func(k int, c oracle.Coord, src []float32) error {
			if k > 0 && s.scratch[k] == nil {
				s.scratch[k] = map[oracle.Coord][]float32{}
			}
			return s.write(s.slot(k), c, src)
		}}
}

func (s *MapStore) slot(k int) map[oracle.Coord][]float32 {
	if k == 0 {
		return s.m
	}
	if s.scratch == nil {
		s.scratch = map[int]map[oracle.Coord][]float32{}
	}
	return s.scratch[k]
}

func (s *MapStore) read(m map[oracle.Coord][]float32, c oracle.Coord, dst []float32) error {
	if err := checkLen(s.spec, c, len(dst)); err != nil {
		return err
	}
	if c.Part == oracle.PartConv {
		for i := range dst {
			e := c
			e.Row += i
			v, ok := m[e]
			if !ok {
				return fmt.Errorf("%w: %+v never written", ErrMissingState, e)
			}
			dst[i] = v[0]
		}
		return nil
	}
	v, ok := m[c]
	if !ok {
		return fmt.Errorf("%w: %+v never written", ErrMissingState, c)
	}
	copy(dst, v)
	return nil
}

func (s *MapStore) write(m map[oracle.Coord][]float32, c oracle.Coord, src []float32) error {
	if err := checkLen(s.spec, c, len(src)); err != nil {
		return err
	}
	if c.Part == oracle.PartConv {
		for i, v := range src {
			e := c
			e.Row += i
			m[e] = []float32{v}
		}
		return nil
	}
	m[c] = append([]float32(nil), src...)
	return nil
}

// Delete forgets the vector at c (every row of a conv channel from c.Row),
// so that reading it is ErrMissingState.
func (s *MapStore) Delete(c oracle.Coord) {
	if c.Part != oracle.PartConv {
		delete(s.m, c)
		return
	}
	n, err := VectorLen(s.spec, c)
	if err != nil {
		return
	}
	for i := 0; i < n; i++ {
		e := c
		e.Row += i
		delete(s.m, e)
	}
}

// Len is the number of entries (vectors; conv elements count one each).
func (s *MapStore) Len() int { return len(s.m) }

// SlotStore is a Store whose recurrent state has scratch slots besides the
// request's state slot (slot 0): speculative decoding computes the state
// after each speculative position into a slot of its own and keeps only
// the accepted one (see Decoder). Per-token state has no slots: a rejected
// position's KV is rewritten when the position is computed again.
type SlotStore interface {
	Store
	// Slots is a view of the store whose recurrent-state reads come from
	// slot from and writes go to slot to; per-token coordinates are the
	// store's own.
	Slots(from, to int) Store
}

// recurrentPart reports whether c addresses recurrent state (the parts
// that live in state slots).
func recurrentPart(c oracle.Coord) bool {
	return c.Part == oracle.PartConv || c.Part == oracle.PartState
}

// slotView routes recurrent coordinates to slots from (reads) and to
// (writes) through read and write, which take the slot.
type slotView struct {
	from, to int
	read     func(k int, c oracle.Coord, dst []float32) error
	write    func(k int, c oracle.Coord, src []float32) error
}

func (v slotView) Read(c oracle.Coord, dst []float32) error {
	k := 0
	if recurrentPart(c) {
		k = v.from
	}
	return v.read(k, c, dst)
}

func (v slotView) Write(c oracle.Coord, src []float32) error {
	k := 0
	if recurrentPart(c) {
		k = v.to
	}
	return v.write(k, c, src)
}
