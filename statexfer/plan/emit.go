package plan

import (
	"cmp"
	"slices"
)

// A template is the plan of ONE layer of a group: every layer of a group has
// the same spec, hence the same per-rank shape and the same page offsets on
// both sides; only the regions (slots) differ. Building one template per
// group and instantiating it per layer keeps planning cost independent of
// the layer count.

// locKind says where a template offset lives.
type locKind uint8

const (
	locPage    locKind = iota // the layer's cache region (block*stride + in-page offset)
	locScratch                // the layer's share of D's staging buffer
)

type loc struct {
	kind locKind
	off  int64
}

// tRead is a template read: from P rank pRank's page space into D.
type tRead struct {
	pRank int
	src   int64 // P page-space offset
	dst   loc
	n     int64
}

// tStep is a template post-processing step on D.
type tStep struct {
	kind            StepKind
	src, dst        loc
	n               int64
	rows, cols, itm int
}

type template struct {
	reads   []tRead
	post    []tStep
	scratch int64 // scratch bytes per layer
}

// add appends a read, merging it into the previous one when both sides
// continue it (the common case, since reads are emitted in D page order).
func (t *template) add(pRank int, src int64, dst loc, n int64) {
	if n <= 0 {
		return
	}
	if k := len(t.reads) - 1; k >= 0 {
		r := &t.reads[k]
		if r.pRank == pRank && r.dst.kind == dst.kind && r.src+r.n == src && r.dst.off+r.n == dst.off {
			r.n += n
			return
		}
	}
	t.reads = append(t.reads, tRead{pRank: pRank, src: src, dst: dst, n: n})
}

// coalesce sorts reads by (P rank, destination kind, source offset) and
// merges every pair that is contiguous on both sides, so the result has
// exactly one read per maximal run.
func (t *template) coalesce() {
	rs := t.reads
	if !slices.IsSortedFunc(rs, cmpRead) {
		slices.SortFunc(rs, cmpRead)
	}
	out := rs[:0]
	for _, r := range rs {
		if k := len(out) - 1; k >= 0 {
			p := &out[k]
			if p.pRank == r.pRank && p.dst.kind == r.dst.kind && p.src+p.n == r.src && p.dst.off+p.n == r.dst.off {
				p.n += r.n
				continue
			}
		}
		out = append(out, r)
	}
	t.reads = out
}

func cmpRead(a, b tRead) int {
	if a.pRank != b.pRank {
		return cmp.Compare(a.pRank, b.pRank)
	}
	if a.dst.kind != b.dst.kind {
		return cmp.Compare(a.dst.kind, b.dst.kind)
	}
	return cmp.Compare(a.src, b.src)
}
