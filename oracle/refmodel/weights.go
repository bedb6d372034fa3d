package refmodel

import (
	"math"
	"math/rand/v2"
	"slices"

	"github.com/hybridxfer/hybridxfer/groups"
)

// Model sizes.
const (
	// Vocab is the number of token ids: 0 <= token < Vocab.
	Vocab = 64
	// Hidden is the width of the residual stream.
	Hidden = 16
	// stateFeatures is how many conv output channels feed each recurrent
	// state head.
	stateFeatures = 4
)

// weights draws float32 weights from one seeded PCG stream, in the order
// they are requested.
type weights struct{ rng *rand.Rand }

func newWeights(seed uint64) *weights {
	return &weights{rng: rand.New(rand.NewPCG(seed, 0x7265666d6f64656c))} // "refmodel"
}

// uniform returns n values uniform in [-scale, scale).
func (w *weights) uniform(n int, scale float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = (2*w.rng.Float32() - 1) * scale
	}
	return out
}

// in returns a rows x cols projection scaled for unit-size inputs.
func (w *weights) in(rows, cols int) []float32 {
	return w.uniform(rows*cols, float32(1/math.Sqrt(float64(cols))))
}

// out returns a rows x cols output projection, scaled down so the
// residual stream grows slowly.
func (w *weights) out(rows, cols int) []float32 {
	return w.uniform(rows*cols, float32(0.5/math.Sqrt(float64(cols))))
}

type attnWeights struct {
	q, k, v [][]float32 // per kv head: d x Hidden, d x Hidden, dv x Hidden
	o       []float32   // Hidden x (kv_heads*dv)
	scale   float32     // 1/sqrt(d)
}

// tokenWeights serve MLA and indexer layers: one vector of n values per
// token; the first nv of them are the attention values.
type tokenWeights struct {
	c, q  []float32 // n x Hidden
	o     []float32 // Hidden x nv
	n, nv int
	scale float32
}

type headWeights struct {
	k, v, q []float32 // d2 x F, d1 x F, d2 x F (F = stateFeatures)
	kvq     []float32 // k, v and q stacked: (2*d2+d1) x F
	g, b    []float32 // Hidden: decay and write gates
	a       []float32 // d1*d2 in [0.5, 1.5): decay rates
	skip    float32
}

type stateWeights struct {
	d1, d2 int
	heads  []headWeights
	gates  []float32 // (2*heads) x Hidden: each head's g, then its b
	o      []float32 // Hidden x (heads*d1)
}

type recWeights struct {
	channels, rows int
	rule           rule
	segOff         []int     // first global channel of each segment
	in             []float32 // channels x Hidden
	conv           []float32 // channels x (rows+1): rows of state, then the new input
	leak           []float32 // channels, in [0.25, 0.5): λ
	o              []float32 // Hidden x channels
	states         []stateWeights
	// heads, stateValues: the state heads of every state tensor and
	// their values, in all.
	heads, stateValues int
}

type layerWeights struct {
	attn *attnWeights
	tok  *tokenWeights
	rec  *recWeights
}

// stateDims views a state head as a d1 x d2 matrix: (Dims[0], rest) for
// two or more dims, (1, Dims[0]) for one (Mamba1: one channel's state).
func stateDims(s *groups.State) (d1, d2 int) {
	if len(s.Dims) == 1 {
		return 1, s.Dims[0]
	}
	return s.Dims[0], s.HeadElems() / s.Dims[0]
}

func newLayerWeights(w *weights, spec *groups.Model, l *groups.Layer) layerWeights {
	switch l.Kind {
	case groups.FullAttention, groups.SlidingWindow, groups.ChunkedLocal:
		a := l.Attention
		d, dv := a.HeadDim, a.VDim()
		x := &attnWeights{scale: float32(1 / math.Sqrt(float64(d)))}
		for h := 0; h < a.KVHeads; h++ {
			x.q = append(x.q, w.in(d, Hidden))
			x.k = append(x.k, w.in(d, Hidden))
			x.v = append(x.v, w.in(dv, Hidden))
		}
		x.o = w.out(Hidden, a.KVHeads*dv)
		return layerWeights{attn: x}
	case groups.MLA, groups.Indexer:
		x := &tokenWeights{}
		if l.Kind == groups.MLA {
			x.n, x.nv = l.MLA.LatentDim+l.MLA.RopeDim, l.MLA.LatentDim
		} else {
			x.n = IndexerFloats(l.Indexer)
			x.nv = x.n
		}
		x.scale = float32(1 / math.Sqrt(float64(x.n)))
		x.c, x.q = w.in(x.n, Hidden), w.in(x.n, Hidden)
		x.o = w.out(Hidden, x.nv)
		return layerWeights{tok: x}
	}
	r := l.Recurrent
	ru, _ := ruleOf(r.Type) // checkMiniature refused types without a rule
	x := &recWeights{channels: r.ConvChannels(), rows: spec.ConvRows(r), rule: ru}
	x.segOff = make([]int, len(r.Segments))
	off := 0
	for i, s := range r.Segments {
		x.segOff[i] = off
		off += s.Channels()
	}
	x.in = w.in(x.channels, Hidden)
	x.conv = w.uniform(x.channels*(x.rows+1), float32(1/math.Sqrt(float64(x.rows+1))))
	x.o = w.out(Hidden, x.channels)
	x.leak = w.uniform(x.channels, 0.125)
	for c := range x.leak {
		x.leak[c] += 0.375
	}
	for i := range r.States {
		s := &r.States[i]
		d1, d2 := stateDims(s)
		sw := stateWeights{d1: d1, d2: d2, o: w.out(Hidden, s.Heads*d1)}
		for h := 0; h < s.Heads; h++ {
			hw := headWeights{
				k: w.in(d2, stateFeatures), v: w.in(d1, stateFeatures), q: w.in(d2, stateFeatures),
				g: w.in(1, Hidden), b: w.in(1, Hidden),
				a: w.uniform(d1*d2, 0.5), skip: w.uniform(1, 1)[0],
			}
			for j := range hw.a {
				hw.a[j] += 1
			}
			hw.kvq = slices.Concat(hw.k, hw.v, hw.q)
			sw.heads = append(sw.heads, hw)
			sw.gates = append(append(sw.gates, hw.g...), hw.b...)
		}
		x.states = append(x.states, sw)
		x.heads += s.Heads
		x.stateValues += s.Heads * d1 * d2
	}
	return layerWeights{rec: x}
}
