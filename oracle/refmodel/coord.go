package refmodel

import (
	"fmt"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle"
)

// State is addressed by GLOBAL coordinates (tp-1 heads and channels),
// spelled as oracle.Coord, the coordinates of the byte patterns of package
// oracle:
//
//	attention K / V        {Layer, PartK / PartV, Index: global kv head, Pos: position}
//	attention scales       {Layer, PartKScale / PartVScale, Index: global kv head, Pos: position}
//	MLA / indexer vector   {Layer, PartK, Index: 0, Pos: position}
//	conv rows              {Layer, PartConv, Index: segment, Pos: global channel in the segment, Row: first row}
//	recurrent state head   {Layer, PartState, Index: global head, Pos: state tensor index}
//
// A vector's length is fixed by its coordinate (VectorLen), except conv
// coordinates, which address rows [Row, Row+n) of one channel for any
// n >= 1 that fits. Conv row ConvRows-1 is the newest input.

// KCoord is the K vector of global kv head head at position pos.
func KCoord(layer, head, pos int) oracle.Coord {
	return oracle.Coord{Layer: layer, Part: oracle.PartK, Index: head, Pos: pos}
}

// VCoord is the V vector of global kv head head at position pos.
func VCoord(layer, head, pos int) oracle.Coord {
	return oracle.Coord{Layer: layer, Part: oracle.PartV, Index: head, Pos: pos}
}

// ScaleCoord is the K (v=false) or V (v=true) scale of global kv head head
// at position pos (layers with Attention.Scales).
func ScaleCoord(layer, head, pos int, v bool) oracle.Coord {
	p := oracle.PartKScale
	if v {
		p = oracle.PartVScale
	}
	return oracle.Coord{Layer: layer, Part: p, Index: head, Pos: pos}
}

// TokenCoord is the MLA latent or indexer vector at position pos.
func TokenCoord(layer, pos int) oracle.Coord {
	return oracle.Coord{Layer: layer, Part: oracle.PartK, Pos: pos}
}

// ConvCoord addresses conv rows from row on, of global channel ch of
// segment seg.
func ConvCoord(layer, seg, ch, row int) oracle.Coord {
	return oracle.Coord{Layer: layer, Part: oracle.PartConv, Index: seg, Pos: ch, Row: row}
}

// StateCoord is global head head of recurrent state tensor state.
func StateCoord(layer, state, head int) oracle.Coord {
	return oracle.Coord{Layer: layer, Part: oracle.PartState, Index: head, Pos: state}
}

// IndexerFloats is the number of float32 values of an indexer vector: the
// cache keeps IndexerTokenBytes bytes per token (head_dim fp8 values and a
// fp32 scale per 128), which a miniature reads as float32.
func IndexerFloats(x *groups.IndexerSpec) int { return groups.IndexerTokenBytes(x) / 4 }

// VectorLen returns the length of the vector at c in spec (for conv
// coordinates, the most rows that fit from c.Row), or ErrCoord.
func VectorLen(spec *groups.Model, c oracle.Coord) (int, error) {
	bad := func(msg string) (int, error) { return 0, fmt.Errorf("%w: %+v: %s", ErrCoord, c, msg) }
	if c.Layer < 0 || c.Layer >= len(spec.Layers) {
		return bad("no such layer")
	}
	l := &spec.Layers[c.Layer]
	if l.Kind.PerToken() {
		if c.Pos < 0 || c.Row != 0 {
			return bad("position < 0 or row set")
		}
	}
	switch l.Kind {
	case groups.FullAttention, groups.SlidingWindow, groups.ChunkedLocal:
		a := l.Attention
		if c.Index < 0 || c.Index >= a.KVHeads {
			return bad("kv head out of range")
		}
		switch c.Part {
		case oracle.PartK:
			return a.HeadDim, nil
		case oracle.PartV:
			return a.VDim(), nil
		case oracle.PartKScale, oracle.PartVScale:
			if a.Scales {
				return 1, nil
			}
			return bad("layer has no scales")
		}
	case groups.MLA, groups.Indexer:
		if c.Part != oracle.PartK || c.Index != 0 {
			return bad("MLA and indexer vectors are {PartK, Index 0}")
		}
		if l.Kind == groups.MLA {
			return l.MLA.LatentDim + l.MLA.RopeDim, nil
		}
		return IndexerFloats(l.Indexer), nil
	case groups.Recurrent:
		r := l.Recurrent
		switch c.Part {
		case oracle.PartConv:
			if c.Index < 0 || c.Index >= len(r.Segments) {
				return bad("no such conv segment")
			}
			rows := spec.ConvRows(r)
			if c.Pos < 0 || c.Pos >= r.Segments[c.Index].Channels() || c.Row < 0 || c.Row >= rows {
				return bad("conv channel or row out of range")
			}
			return rows - c.Row, nil
		case oracle.PartState:
			if c.Pos < 0 || c.Pos >= len(r.States) || c.Row != 0 {
				return bad("no such state tensor")
			}
			s := &r.States[c.Pos]
			if c.Index < 0 || c.Index >= s.Heads {
				return bad("state head out of range")
			}
			return s.HeadElems(), nil
		}
	}
	return bad("part does not belong to the layer's kind")
}

// checkLen checks that n values may be read or written at c.
func checkLen(spec *groups.Model, c oracle.Coord, n int) error {
	want, err := VectorLen(spec, c)
	if err != nil {
		return err
	}
	if n == want || (c.Part == oracle.PartConv && n >= 1 && n <= want) {
		return nil
	}
	return fmt.Errorf("%w: %+v: %d values, want %d", ErrCoord, c, n, want)
}

// VisitState calls fn, in a fixed order, for every vector of the live state
// of spec after positions [0, n) were computed: per-token layers at
// positions [layer.LiveStart(n), n), every head and part; recurrent layers
// (when n > 0) every conv channel (all rows, one vector) and every state
// head. size is the vector's length.
func VisitState(spec *groups.Model, n int, fn func(c oracle.Coord, size int)) {
	if n <= 0 {
		return
	}
	for li := range spec.Layers {
		l := &spec.Layers[li]
		switch l.Kind {
		case groups.FullAttention, groups.SlidingWindow, groups.ChunkedLocal:
			a := l.Attention
			for t := l.LiveStart(n); t < n; t++ {
				for h := 0; h < a.KVHeads; h++ {
					fn(KCoord(li, h, t), a.HeadDim)
					fn(VCoord(li, h, t), a.VDim())
					if a.Scales {
						fn(ScaleCoord(li, h, t, false), 1)
						fn(ScaleCoord(li, h, t, true), 1)
					}
				}
			}
		case groups.MLA, groups.Indexer:
			size, _ := VectorLen(spec, TokenCoord(li, 0))
			for t := l.LiveStart(n); t < n; t++ {
				fn(TokenCoord(li, t), size)
			}
		case groups.Recurrent:
			visitLayerState(spec, li, fn)
		}
	}
}

// visitLayerState visits recurrent layer li's conv channels and state
// heads.
func visitLayerState(spec *groups.Model, li int, fn func(c oracle.Coord, size int)) {
	r := spec.Layers[li].Recurrent
	rows := spec.ConvRows(r)
	for si, s := range r.Segments {
		for ch := 0; ch < s.Channels(); ch++ {
			fn(ConvCoord(li, si, ch, 0), rows)
		}
	}
	for si, s := range r.States {
		for h := 0; h < s.Heads; h++ {
			fn(StateCoord(li, si, h), s.HeadElems())
		}
	}
}
