package refmodel

import (
	"fmt"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle"
)

// step is one Forward: it reads earlier state from the store and buffers
// position t's new state until commit.
type step struct {
	m        *Model
	s        Store
	t        int
	perToken []pending
	fixed    []pending // recurrent state
	cache    *runCache // per-token vectors of this run (runcache.go)
	// recUpdates: the recurrent state this position leaves, for the cache.
	recUpdates []recUpdate
}

type pending struct {
	c oracle.Coord
	v []float32
}

func (st *step) read(c oracle.Coord, n int) ([]float32, error) {
	v := make([]float32, n)
	if err := st.s.Read(c, v); err != nil {
		return nil, st.readErr(c.Layer, err)
	}
	return v, nil
}

func (st *step) readErr(li int, err error) error {
	return fmt.Errorf("layer %d (%s): %w", li, st.m.spec.Layers[li].Name, err)
}

// commit writes position t's state: per-token vectors through to the
// store (and into the run's cache); recurrent state through to the store
// on the run's first position (or a store the cache does not carry it
// for) and into the cache (runcache.go). The values are not modified
// afterwards, so the cache keeps them without copying.
func (st *step) commit() error {
	if err := st.m.write(st.s, st.t, st.perToken, st.fixed); err != nil {
		return err
	}
	st.keep()
	st.cache.perToken, st.cache.fixed = st.perToken[:0], st.fixed[:0]
	return nil
}

// keep records position t's state in the run's cache: its per-token
// vectors (truncating the key arrays at a position it rewrites) and its
// recurrent state, which the store has too when the position wrote it
// through.
func (st *step) keep() {
	for _, p := range st.perToken {
		st.cache.col(p.c).put(p.c.Pos, p.v)
		st.cache.invalidate(p.c.Layer, p.c.Index, p.c.Pos)
	}
	st.cache.apply(st.recUpdates, len(st.fixed) > 0)
}

// write writes position t's pending lists to s in order; an error names
// the first write that failed (the writes before it stay).
func (m *Model) write(s Store, t int, lists ...[]pending) error {
	for _, l := range lists {
		for _, p := range l {
			if err := s.Write(p.c, p.v); err != nil {
				return fmt.Errorf("layer %d (%s) position %d: %w", p.c.Layer, m.spec.Layers[p.c.Layer].Name, t, err)
			}
		}
	}
	return nil
}

// stack runs layers as residual blocks on x, in place: a decoder layer is
// a layer and the Parallel layers after it, which all read the same
// rmsnorm(x) and whose outputs are added together (Falcon-H1's attention
// and Mamba2 mixer): x += sum of layer(rmsnorm(x)).
func (st *step) stack(layers []int, x []float32) error {
	for i := 0; i < len(layers); {
		h := rmsNorm(x)
		var sum []float32
		j := i
		for ; j < len(layers) && (j == i || st.m.spec.Layers[layers[j]].Parallel); j++ {
			o, err := st.layer(layers[j], h)
			if err != nil {
				return err
			}
			if sum == nil {
				sum = o
			} else {
				addInto(sum, o)
			}
		}
		addInto(x, sum)
		i = j
	}
	return nil
}

// layer returns layer li's contribution to the residual stream for input
// h (normalized).
func (st *step) layer(li int, h []float32) ([]float32, error) {
	l := &st.m.spec.Layers[li]
	w := &st.m.layers[li]
	switch {
	case w.attn != nil:
		return st.attention(li, l, w.attn, h)
	case w.tok != nil:
		return st.tokenAttention(li, l, w.tok, h)
	default:
		return st.recurrent(li, l, w.rec, h)
	}
}

// quantize splits x into stored values and a scale: with scales, x/s and
// s = max|x| (1 when x is 0); without, x itself. dequantize inverts it the
// way every reader does, so position t's own values and values read back
// from the store are the same bits.
func quantize(x []float32, scales bool) ([]float32, float32) {
	if !scales {
		return x, 1
	}
	var s float32
	for _, v := range x {
		if v < 0 {
			v = -v
		}
		s = max(s, v)
	}
	if s == 0 {
		s = 1
	}
	q := make([]float32, len(x))
	for i, v := range x {
		q[i] = v / s
	}
	return q, s
}

func dequantize(q []float32, s float32, scales bool) []float32 {
	if !scales {
		return q
	}
	out := make([]float32, len(q))
	for i, v := range q {
		out[i] = v * s
	}
	return out
}

// attention: per kv head, q, k, v = projections of h; t's k and v (and
// their scales) are written; softmax attention over [Layer.LiveStart(t), t];
// the heads' outputs are projected back to the residual stream. The heads
// read the run's key arrays (keyarray.go) and run in parallel when long.
func (st *step) attention(li int, l *groups.Layer, w *attnWeights, h []float32) ([]float32, error) {
	a := l.Attention
	d, dv, t := a.HeadDim, a.VDim(), st.t
	lo := l.LiveStart(t)
	cat := make([]float32, a.KVHeads*dv)
	jobs := st.cache.jobs[:0]
	for g := 0; g < a.KVHeads; g++ {
		q := matVec(w.q[g], d, h)
		kq, ks := quantize(matVec(w.k[g], d, h), a.Scales)
		vq, vs := quantize(matVec(w.v[g], dv, h), a.Scales)
		ka := st.cache.keyArray(li, g, d, dv)
		if err := st.fillHead(ka, li, g, d, dv, a.Scales, lo); err != nil {
			return nil, err
		}
		jobs = append(jobs, headJob{q: q, ka: ka, ownK: dequantize(kq, ks, a.Scales), ownV: dequantize(vq, vs, a.Scales),
			dim: dv, scale: w.scale, out: cat[g*dv : (g+1)*dv]})
		st.perToken = append(st.perToken, pending{c: KCoord(li, g, t), v: kq}, pending{c: VCoord(li, g, t), v: vq})
		if a.Scales {
			st.perToken = append(st.perToken, pending{c: ScaleCoord(li, g, t, false), v: []float32{ks}}, pending{c: ScaleCoord(li, g, t, true), v: []float32{vs}})
		}
	}
	attendHeads(jobs, !st.cache.split)
	clear(jobs)
	st.cache.jobs = jobs[:0]
	return matVec(w.o, Hidden, cat), nil
}

// fillHead brings head g's array to [lo, t): the entries it lacks are
// read through the run's columns (readVia) and dequantized.
func (st *step) fillHead(ka *keyArray, li, g, d, dv int, scales bool, lo int) error {
	ka.window(lo)
	if ka.end == st.t {
		return nil
	}
	kcol, vcol := st.cache.col(KCoord(li, g, 0)), st.cache.col(VCoord(li, g, 0))
	var kscol, vscol *column
	if scales {
		kscol, vscol = st.cache.col(ScaleCoord(li, g, 0, false)), st.cache.col(ScaleCoord(li, g, 0, true))
	}
	for j := ka.end; j < st.t; j++ {
		k, err := st.readVia(kcol, KCoord(li, g, j), d)
		if err != nil {
			return err
		}
		v, err := st.readVia(vcol, VCoord(li, g, j), dv)
		if err != nil {
			return err
		}
		sk, sv := float32(1), float32(1)
		if scales {
			x, err := st.readVia(kscol, ScaleCoord(li, g, j, false), 1)
			if err != nil {
				return err
			}
			y, err := st.readVia(vscol, ScaleCoord(li, g, j, true), 1)
			if err != nil {
				return err
			}
			sk, sv = x[0], y[0]
		}
		ka.push(dequantize(k, sk, scales), dequantize(v, sv, scales))
	}
	return nil
}

// tokenAttention serves MLA and indexer layers: c = Wc·h is t's cached
// vector (MLA: latent ‖ rope; indexer: its head_dim+scales bytes as
// float32), written at t; scores q·c_j over [0, t]; values are the first
// nv values of c_j.
func (st *step) tokenAttention(li int, l *groups.Layer, w *tokenWeights, h []float32) ([]float32, error) {
	t := st.t
	lo := l.LiveStart(t)
	q := matVec(w.q, w.n, h)
	c := matVec(w.c, w.n, h)
	ka := st.cache.keyArray(li, 0, w.n, 0)
	ka.window(lo)
	col := st.cache.col(TokenCoord(li, 0))
	for j := ka.end; j < t; j++ {
		v, err := st.readVia(col, TokenCoord(li, j), w.n)
		if err != nil {
			return nil, err
		}
		ka.push(v, nil)
	}
	st.perToken = append(st.perToken, pending{c: TokenCoord(li, t), v: c})
	out := make([]float32, w.nv)
	job := headJob{q: q, ka: ka, ownK: c, dim: w.nv, scale: w.scale, out: out}
	job.stage()
	job.run()
	return matVec(w.o, Hidden, out), nil
}
