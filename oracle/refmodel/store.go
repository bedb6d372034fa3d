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
	spec *groups.Model
	m    map[oracle.Coord][]float32
}

// NewMapStore returns an empty store for spec's coordinates.
func NewMapStore(spec *groups.Model) *MapStore {
	return &MapStore{spec: spec, m: map[oracle.Coord][]float32{}}
}

// Read implements Store.
func (s *MapStore) Read(c oracle.Coord, dst []float32) error {
	if err := checkLen(s.spec, c, len(dst)); err != nil {
		return err
	}
	if c.Part == oracle.PartConv {
		for i := range dst {
			e := c
			e.Row += i
			v, ok := s.m[e]
			if !ok {
				return fmt.Errorf("%w: %+v never written", ErrMissingState, e)
			}
			dst[i] = v[0]
		}
		return nil
	}
	v, ok := s.m[c]
	if !ok {
		return fmt.Errorf("%w: %+v never written", ErrMissingState, c)
	}
	copy(dst, v)
	return nil
}

// Write implements Store.
func (s *MapStore) Write(c oracle.Coord, src []float32) error {
	if err := checkLen(s.spec, c, len(src)); err != nil {
		return err
	}
	if c.Part == oracle.PartConv {
		for i, v := range src {
			e := c
			e.Row += i
			s.m[e] = []float32{v}
		}
		return nil
	}
	s.m[c] = append([]float32(nil), src...)
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
