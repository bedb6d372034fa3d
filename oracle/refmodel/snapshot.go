package refmodel

import (
	"fmt"
	"math"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle"
)

// Elem is one vector of a snapshot.
type Elem struct {
	Coord  oracle.Coord
	Values []float32
}

// Snapshot is the live state of a request after N positions, read by
// coordinates in VisitState's order: comparable across stores of any tp,
// block size and layout.
type Snapshot struct {
	N     int
	Elems []Elem
}

// Snapshot reads the live state of s after n positions (VisitState).
func (m *Model) Snapshot(s Store, n int) (*Snapshot, error) {
	if m.err != nil {
		return nil, m.err
	}
	return TakeSnapshot(m.spec, s, n)
}

// TakeSnapshot reads the live state of s after n positions of spec.
func TakeSnapshot(spec *groups.Model, s Store, n int) (*Snapshot, error) {
	snap := &Snapshot{N: n}
	var err error
	VisitState(spec, n, func(c oracle.Coord, size int) {
		if err != nil {
			return
		}
		v := make([]float32, size)
		if err = s.Read(c, v); err == nil {
			snap.Elems = append(snap.Elems, Elem{Coord: c, Values: v})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot after %d positions: %w", n, err)
	}
	return snap, nil
}

// Diff returns nil when a and b hold the same coordinates with bit-equal
// values, else ErrStateMismatch naming the first difference.
func (a *Snapshot) Diff(b *Snapshot) error {
	if a.N != b.N || len(a.Elems) != len(b.Elems) {
		return fmt.Errorf("%w: %d vectors after %d positions vs %d after %d", ErrStateMismatch, len(a.Elems), a.N, len(b.Elems), b.N)
	}
	for i := range a.Elems {
		x, y := &a.Elems[i], &b.Elems[i]
		if x.Coord != y.Coord || len(x.Values) != len(y.Values) {
			return fmt.Errorf("%w: vector %d is %+v vs %+v", ErrStateMismatch, i, x.Coord, y.Coord)
		}
		for j := range x.Values {
			if math.Float32bits(x.Values[j]) != math.Float32bits(y.Values[j]) {
				return fmt.Errorf("%w: %+v value %d: %v vs %v", ErrStateMismatch, x.Coord, j, x.Values[j], y.Values[j])
			}
		}
	}
	return nil
}

// CopyState copies, coordinate by coordinate, everything a request needs
// to continue at position h from src to dst: per-token layers' live
// positions [layer.LiveStart(h), h) and every recurrent state. It is the
// naive transfer the planner's must agree with (nothing of the planner is
// used).
func CopyState(spec *groups.Model, dst, src Store, h int) error {
	var err error
	VisitState(spec, h, func(c oracle.Coord, size int) {
		if err != nil {
			return
		}
		v := make([]float32, size)
		if err = src.Read(c, v); err == nil {
			err = dst.Write(c, v)
		}
	})
	if err != nil {
		return fmt.Errorf("copy state of %d positions: %w", h, err)
	}
	return nil
}
