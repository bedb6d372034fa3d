package refmodel

import (
	"encoding/json"
	"fmt"

	"github.com/hybridxfer/hybridxfer/groups"
)

// Dimensions of a miniature. Everything that decides how tensor
// parallelism shards a layer (KV heads, conv segment units and their
// replication, state heads) is kept; everything else shrinks.
const (
	miniHeadDim   = 4   // attention head_dim
	miniLatentDim = 8   // MLA kv_lora_rank
	miniRopeDim   = 4   // MLA rope dims (0 stays 0)
	miniIndexer   = 128 // indexer head_dim: the smallest multiple of 128
	miniUnitWidth = 2   // conv segment unit width (at most)
	miniStateDim  = 2   // every state dimension (at most)
	// MaxMiniatureTP is the largest tp for which a miniature shards exactly
	// like its model: counts above it shrink (see Miniature).
	MaxMiniatureTP = 64
)

// miniUnits shrinks a head or unit count u above MaxMiniatureTP to
// Π p^min(v_p(u), ⌊log_p 64⌋) over the primes p ≤ 64 when that is still at
// least 64: every t ≤ 64 then divides it exactly when t divides u, and
// t % it == 0 only when both divide, so sharding and replication are the
// same for every tp up to 64. Mamba1's 8,192 single-channel units become
// 64, so the reference model does not compute 8,192 conv channels and SSM
// heads per layer.
func miniUnits(u int) int {
	if u <= MaxMiniatureTP {
		return u
	}
	out := 1
	for p := 2; p <= MaxMiniatureTP; p++ {
		if !prime(p) {
			continue
		}
		maxPow := 1
		for maxPow*p <= MaxMiniatureTP {
			maxPow *= p
		}
		for q := 1; q < maxPow && (u/q)%p == 0 && u%(q*p) == 0; q *= p {
			out *= p
		}
	}
	if out < MaxMiniatureTP {
		return u
	}
	return out
}

func prime(n int) bool {
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return n >= 2
}

// Miniature returns the miniature of m that the reference model runs: the
// same layers with the same names, kinds, order, draft and parallel flags, the same
// num_speculative_tokens, draft kind and conv kernels, and the same head and
// unit counts (KV heads, conv segment units and replication, state heads),
// so every tp that shards m shards the miniature the same way, with the
// same KV cache groups. Dimensions shrink: attention head_dim 4 (head_dim_v
// 4, 2 or 6 when set: equal to, below or above head_dim), MLA latent 8 and
// rope 4 (0 stays 0), indexer head_dim 128, conv unit widths and state
// dimensions at most 2.
//
// Every dtype becomes fp32 and fp8_ds_mla becomes plain MLA: the reference
// model computes and stores float32, so results are exact and bit for bit
// deterministic; dtype sizes and conversions are the planner's business and
// are covered by the byte-pattern checks of package oracle.
//
// Two layers share a miniature spec exactly when they share a spec in m:
// where shrinking would merge distinct specs, the later one is widened by
// one element (head_dim, latent, indexer head_dim by 128, first unit
// width) until it is distinct again, so KV cache grouping is unchanged.
// The result is named m.Name+"-mini".
func Miniature(m *groups.Model) (*groups.Model, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: nil model", ErrNotMiniature)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotMiniature, err)
	}
	out := &groups.Model{
		Name:                 m.Name + "-mini",
		Architecture:         m.Architecture,
		NumSpeculativeTokens: m.NumSpeculativeTokens,
		Draft:                m.Draft,
		Layers:               make([]groups.Layer, len(m.Layers)),
	}
	miniOf := map[string]groups.Layer{} // spec key of m -> shrunk payload
	taken := map[string]bool{}          // spec keys of the miniature in use
	for i := range m.Layers {
		l := &m.Layers[i]
		k := specKey(l)
		mini, ok := miniOf[k]
		if !ok {
			for extra := 0; ; extra++ {
				mini = shrink(l, extra)
				if mk := specKey(&mini); !taken[mk] {
					taken[mk] = true
					break
				}
			}
			miniOf[k] = mini
		}
		mini = cloneLayer(mini)
		mini.Name, mini.Draft, mini.Parallel = l.Name, l.Draft, l.Parallel
		out.Layers[i] = mini
	}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("%w: miniature of %s: %w", ErrNotMiniature, m.Name, err)
	}
	return out, nil
}

// specKey mirrors the grouping key of package groups: the kind and the
// payload, not the name nor the draft flag.
func specKey(l *groups.Layer) string {
	b, _ := json.Marshal(struct {
		K groups.Kind
		A *groups.Attention     `json:",omitempty"`
		M *groups.MLASpec       `json:",omitempty"`
		I *groups.IndexerSpec   `json:",omitempty"`
		R *groups.RecurrentSpec `json:",omitempty"`
	}{l.Kind, l.Attention, l.MLA, l.Indexer, l.Recurrent})
	return string(b)
}

// shrink returns l's miniature payload, widened by extra elements.
func shrink(l *groups.Layer, extra int) groups.Layer {
	out := groups.Layer{Kind: l.Kind}
	switch {
	case l.Attention != nil:
		a := *l.Attention
		a.HeadDim, a.DType = miniHeadDim+extra, groups.FP32
		a.KVHeads = miniUnits(a.KVHeads)
		switch v := l.Attention.HeadDimV; {
		case v == 0:
		case v == l.Attention.HeadDim:
			a.HeadDimV = a.HeadDim
		case v < l.Attention.HeadDim:
			a.HeadDimV = miniHeadDim/2 + extra
		default:
			a.HeadDimV = miniHeadDim + 2 + extra
		}
		out.Attention = &a
	case l.MLA != nil:
		x := groups.MLASpec{LatentDim: miniLatentDim + extra, DType: groups.FP32, Format: groups.MLAPlain}
		if l.MLA.RopeDim > 0 {
			x.RopeDim = miniRopeDim
		}
		out.MLA = &x
	case l.Indexer != nil:
		out.Indexer = &groups.IndexerSpec{HeadDim: miniIndexer * (1 + extra)}
	case l.Recurrent != nil:
		r := *l.Recurrent
		r.ConvDType = groups.FP32
		r.Segments = append([]groups.Segment(nil), r.Segments...)
		for j := range r.Segments {
			r.Segments[j].UnitWidth = min(r.Segments[j].UnitWidth, miniUnitWidth)
			r.Segments[j].Units = miniUnits(r.Segments[j].Units)
		}
		r.Segments[0].UnitWidth += extra
		r.States = make([]groups.State, len(l.Recurrent.States))
		for j, s := range l.Recurrent.States {
			s.DType = groups.FP32
			s.Heads = miniUnits(s.Heads)
			s.Dims = append([]int(nil), s.Dims...)
			for k := range s.Dims {
				s.Dims[k] = min(s.Dims[k], miniStateDim)
			}
			r.States[j] = s
		}
		out.Recurrent = &r
	}
	return out
}

func cloneLayer(l groups.Layer) groups.Layer {
	m := groups.Model{Layers: []groups.Layer{l}}
	return m.Clone().Layers[0]
}

// checkMiniature reports why spec cannot run in the reference model.
func checkMiniature(spec *groups.Model) error {
	if spec == nil {
		return fmt.Errorf("%w: nil model", ErrNotMiniature)
	}
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotMiniature, err)
	}
	bad := func(i int, what string) error {
		return fmt.Errorf("%w: layer %d (%s): %s (use Miniature)", ErrNotMiniature, i, spec.Layers[i].Name, what)
	}
	for i := range spec.Layers {
		l := &spec.Layers[i]
		switch {
		case l.Attention != nil:
			if l.Attention.DType != groups.FP32 {
				return bad(i, "attention dtype "+l.Attention.DType.String())
			}
		case l.MLA != nil:
			if l.MLA.DType != groups.FP32 || l.MLA.Format != groups.MLAPlain {
				return bad(i, "MLA cache is not plain fp32")
			}
		case l.Recurrent != nil:
			if _, ok := ruleOf(l.Recurrent.Type); !ok {
				return bad(i, fmt.Sprintf("no reference update rule for recurrent type %q", l.Recurrent.Type))
			}
			if l.Recurrent.ConvDType != groups.FP32 {
				return bad(i, "conv dtype "+l.Recurrent.ConvDType.String())
			}
			for _, s := range l.Recurrent.States {
				if s.DType != groups.FP32 {
					return bad(i, "state "+s.Name+" dtype "+s.DType.String())
				}
			}
		}
	}
	return nil
}
