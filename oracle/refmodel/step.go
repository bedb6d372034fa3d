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
}

type pending struct {
	c oracle.Coord
	v []float32
}

func (st *step) read(c oracle.Coord, n int) ([]float32, error) {
	v := make([]float32, n)
	if err := st.s.Read(c, v); err != nil {
		return nil, fmt.Errorf("layer %d (%s): %w", c.Layer, st.m.spec.Layers[c.Layer].Name, err)
	}
	return v, nil
}

func (st *step) commit() error {
	for _, list := range [][]pending{st.perToken, st.fixed} {
		for _, p := range list {
			if err := st.s.Write(p.c, p.v); err != nil {
				return fmt.Errorf("layer %d (%s) position %d: %w", p.c.Layer, st.m.spec.Layers[p.c.Layer].Name, st.t, err)
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
		scores := make([]float32, 0, t-lo+1)
		vals := make([][]float32, 0, t-lo+1)
		for j := lo; j < t; j++ {
			k, err := st.read(KCoord(li, g, j), d)
			if err != nil {
				return nil, err
			}
			v, err := st.read(VCoord(li, g, j), dv)
			if err != nil {
				return nil, err
			}
			sk, sv := float32(1), float32(1)
			if a.Scales {
				x, err := st.read(ScaleCoord(li, g, j, false), 1)
				if err != nil {
					return nil, err
				}
				y, err := st.read(ScaleCoord(li, g, j, true), 1)
				if err != nil {
					return nil, err
				}
				sk, sv = x[0], y[0]
			}
			scores = append(scores, dot(q, dequantize(k, sk, a.Scales))*w.scale)
			vals = append(vals, dequantize(v, sv, a.Scales))
		}
		scores = append(scores, dot(q, dequantize(kq, ks, a.Scales))*w.scale)
		vals = append(vals, dequantize(vq, vs, a.Scales))
		cat = append(cat, attend(scores, vals, dv)...)
		st.perToken = append(st.perToken, pending{KCoord(li, g, t), kq}, pending{VCoord(li, g, t), vq})
		if a.Scales {
			st.perToken = append(st.perToken, pending{ScaleCoord(li, g, t, false), []float32{ks}}, pending{ScaleCoord(li, g, t, true), []float32{vs}})
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
	scores := make([]float32, 0, t-lo+1)
	vals := make([][]float32, 0, t-lo+1)
	for j := lo; j < t; j++ {
		v, err := st.read(TokenCoord(li, j), w.n)
		if err != nil {
			return nil, err
		}
		scores = append(scores, dot(q, v)*w.scale)
		vals = append(vals, v[:w.nv])
	}
	scores = append(scores, dot(q, c)*w.scale)
	vals = append(vals, c[:w.nv])
	st.perToken = append(st.perToken, pending{TokenCoord(li, t), c})
	return matVec(w.o, Hidden, attend(scores, vals, w.nv)), nil
}
