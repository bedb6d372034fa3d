package oracle

import (
	"encoding/binary"

	"github.com/hybridxfer/hybridxfer/groups"
)

// Part says which piece of a layer's state a vector belongs to.
type Part uint8

// Parts.
const (
	PartK      Part = iota + 1 // attention K (or the MLA / indexer vector)
	PartV                      // attention V
	PartKScale                 // fp32 scale of K
	PartVScale                 // fp32 scale of V
	PartConv                   // one conv element
	PartState                  // one head of a recurrent state tensor
)

// Coord is the global coordinate of one vector of state.
type Coord struct {
	Layer int
	Part  Part
	// Index: the global head (attention, state), or the conv segment.
	Index int
	// Pos: the token position (per-token kinds), the global channel within
	// the segment (conv), or the state tensor index (state).
	Pos int
	// Row: the conv row.
	Row int
}

func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// seed is the per-vector seed of request seed s at c.
func seed(s uint64, c Coord) uint64 {
	h := mix(s)
	for _, v := range [...]uint64{uint64(c.Layer), uint64(c.Part), uint64(c.Index), uint64(c.Pos), uint64(c.Row)} {
		h = mix(h ^ v)
	}
	return h
}

// Fill writes the pattern of vector c of request seed s into dst.
func Fill(dst []byte, s uint64, c Coord) {
	h := seed(s, c)
	i := 0
	for ; i+8 <= len(dst); i += 8 {
		binary.LittleEndian.PutUint64(dst[i:], mix(h+uint64(i)))
	}
	if i < len(dst) {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], mix(h+uint64(i)))
		copy(dst[i:], b[:])
	}
}

// Mismatch returns the index of the first byte of got that differs from the
// pattern of vector c of request seed s, or -1.
func Mismatch(got []byte, s uint64, c Coord) int {
	h := seed(s, c)
	var b [8]byte
	for i := 0; i < len(got); i += 8 {
		binary.LittleEndian.PutUint64(b[:], mix(h+uint64(i)))
		n := min(8, len(got)-i)
		for j := 0; j < n; j++ {
			if got[i+j] != b[j] {
				return i + j
			}
		}
	}
	return -1
}

// Table maps a per-token group's block index (position / block size) to a
// block id, 0 for null; recurrent groups use index 0 for the state slot.
type Table func(k int) int

// Visit calls fn for every vector of layer li's state on geometry g: for
// per-token layers the positions [lo, hi) whose block is not null, for
// recurrent layers the whole state in block table(0). off is the byte
// offset within the layer's region (g.Layer(li): pool Pool, region
// Region), n the vector's length.
func Visit(g *groups.Geometry, li int, table Table, lo, hi int, fn func(off int64, n int, c Coord)) {
	l := g.Layer(li)
	if l.Layer.Kind == groups.Recurrent {
		id := table(0)
		if id == 0 {
			return
		}
		base := l.PageOffset(id)
		e := l.ConvElem
		for si, s := range l.Segments {
			for c := 0; c < s.Channels(); c++ {
				for r := 0; r < l.ConvRows; r++ {
					fn(base+int64(l.ConvOffset(s.Offset+c, r)), e, Coord{Layer: li, Part: PartConv, Index: si, Pos: s.GlobalChannel(c), Row: r})
				}
			}
		}
		for si, s := range l.States {
			hb := s.HeadElems() * s.DType.Size()
			for h := 0; h < s.Count; h++ {
				fn(base+int64(l.StateOffset(si, h)), hb, Coord{Layer: li, Part: PartState, Index: s.First + h, Pos: si})
			}
		}
		return
	}
	bs := l.BlockSize
	for t := lo; t < hi; t++ {
		id := table(t / bs)
		if id == 0 {
			continue
		}
		base := l.PageOffset(id)
		in := t % bs
		for h := 0; h < l.Heads.Count; h++ {
			gh := l.Heads.First + h
			fn(base+int64(l.KOffset(in, h)), l.KBytes, Coord{Layer: li, Part: PartK, Index: gh, Pos: t})
			if l.VBytes > 0 {
				fn(base+int64(l.VOffset(in, h)), l.VBytes, Coord{Layer: li, Part: PartV, Index: gh, Pos: t})
			}
			if l.ScaleBytes > 0 {
				fn(base+int64(l.ScaleOffset(in, h, false)), l.ScaleBytes, Coord{Layer: li, Part: PartKScale, Index: gh, Pos: t})
				fn(base+int64(l.ScaleOffset(in, h, true)), l.ScaleBytes, Coord{Layer: li, Part: PartVScale, Index: gh, Pos: t})
			}
		}
	}
}
