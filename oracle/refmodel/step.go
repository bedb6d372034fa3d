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
	for _, p := range st.perToken {
		if err := st.s.Write(p.c, p.v); err != nil {
			return st.writeErr(p, err)
		}
		st.cache.col(p.c).put(p.c.Pos, p.v)
	}
	for _, p := range st.fixed {
		if err := st.s.Write(p.c, p.v); err != nil {
			return st.writeErr(p, err)
		}
	}
	st.cache.apply(st.recUpdates, len(st.fixed) > 0)
	st.cache.perToken, st.cache.fixed = st.perToken[:0], st.fixed[:0]
	return nil
}

func (st *step) writeErr(p pending, err error) error {
	return fmt.Errorf("layer %d (%s) position %d: %w", p.c.Layer, st.m.spec.Layers[p.c.Layer].Name, st.t, err)
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
// the heads' outputs are projected back to the residual stream.
func (st *step) attention(li int, l *groups.Layer, w *attnWeights, h []float32) ([]float32, error) {
	a := l.Attention
	d, dv, t := a.HeadDim, a.VDim(), st.t
	lo := l.LiveStart(t)
	cat := make([]float32, 0, a.KVHeads*dv)
	for g := 0; g < a.KVHeads; g++ {
		q := matVec(w.q[g], d, h)
		kq, ks := quantize(matVec(w.k[g], d, h), a.Scales)
		vq, vs := quantize(matVec(w.v[g], dv, h), a.Scales)
		keys, vals := st.cache.keys[:0], st.cache.vals[:0]
		kcol, vcol := st.cache.col(KCoord(li, g, 0)), st.cache.col(VCoord(li, g, 0))
		var kscol, vscol *column
		if a.Scales {
			kscol, vscol = st.cache.col(ScaleCoord(li, g, 0, false)), st.cache.col(ScaleCoord(li, g, 0, true))
		}
		for j := lo; j < t; j++ {
			k, err := st.readVia(kcol, KCoord(li, g, j), d)
			if err != nil {
				return nil, err
			}
			v, err := st.readVia(vcol, VCoord(li, g, j), dv)
			if err != nil {
				return nil, err
			}
			sk, sv := float32(1), float32(1)
			if a.Scales {
				x, err := st.readVia(kscol, ScaleCoord(li, g, j, false), 1)
				if err != nil {
					return nil, err
				}
				y, err := st.readVia(vscol, ScaleCoord(li, g, j, true), 1)
				if err != nil {
					return nil, err
				}
				sk, sv = x[0], y[0]
			}
			keys = append(keys, dequantize(k, sk, a.Scales))
			vals = append(vals, dequantize(v, sv, a.Scales))
		}
		keys = append(keys, dequantize(kq, ks, a.Scales))
		vals = append(vals, dequantize(vq, vs, a.Scales))
		cat = append(cat, st.softmaxAttend(q, keys, vals, w.scale, dv)...)
		st.perToken = append(st.perToken, pending{c: KCoord(li, g, t), v: kq}, pending{c: VCoord(li, g, t), v: vq})
		if a.Scales {
			st.perToken = append(st.perToken, pending{c: ScaleCoord(li, g, t, false), v: []float32{ks}}, pending{c: ScaleCoord(li, g, t, true), v: []float32{vs}})
		}
	}
	return matVec(w.o, Hidden, cat), nil
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
	keys, vals := st.cache.keys[:0], st.cache.vals[:0]
	col := st.cache.col(TokenCoord(li, 0))
	for j := lo; j < t; j++ {
		v, err := st.readVia(col, TokenCoord(li, j), w.n)
		if err != nil {
			return nil, err
		}
		keys = append(keys, v)
		vals = append(vals, v[:w.nv])
	}
	keys = append(keys, c)
	vals = append(vals, c[:w.nv])
	st.perToken = append(st.perToken, pending{c: TokenCoord(li, t), v: c})
	return matVec(w.o, Hidden, st.softmaxAttend(q, keys, vals, w.scale, w.nv)), nil
}

// softmaxAttend returns attend over scores dot(q, keys[j])·scale and vals
// (dim values each), on the run's scratch buffers, which it keeps for the
// next call.
func (st *step) softmaxAttend(q []float32, keys, vals [][]float32, scale float32, dim int) []float32 {
	tc := st.cache
	if cap(tc.scores) < len(keys) {
		tc.scores = make([]float32, len(keys), 2*len(keys))
		tc.ps = make([]float32, len(keys), 2*len(keys))
	}
	scores := tc.scores[:len(keys)]
	dots(q, keys, scores)
	for j := range scores {
		scores[j] *= scale
	}
	out := attend(scores, vals, dim, tc.ps[:len(keys)])
	clear(keys)
	clear(vals)
	tc.keys, tc.vals = keys[:0], vals[:0]
	return out
}
