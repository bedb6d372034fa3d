package groups

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
)

// CompatFields are the facts two instances must agree on to exchange state,
// as short strings keyed by name, so a mismatch can be explained field by
// field. Tensor-parallel size, block sizes and layouts are deliberately
// absent: they may differ between P and D and are checked separately.
func CompatFields(m *Model, protocolVersion int) map[string]string {
	f := map[string]string{
		"protocol_version":       fmt.Sprint(protocolVersion),
		"model":                  m.Name,
		"architecture":           m.Architecture,
		"num_layers":             fmt.Sprint(len(m.Layers)),
		"num_speculative_tokens": fmt.Sprint(m.NumSpeculativeTokens),
		"draft":                  string(m.Draft),
	}
	kinds := map[string]int{}
	dtypes := map[string]bool{}
	var layers strings.Builder
	for i := range m.Layers {
		l := &m.Layers[i]
		k := l.Kind.String()
		if l.Draft {
			k = "draft_" + k
		}
		kinds[k]++
		switch {
		case l.Attention != nil:
			a := l.Attention
			dtypes[a.DType.String()] = true
			f["attention."+k] = fmt.Sprintf("kv_heads=%d q_heads=%d head_dim=%d head_dim_v=%d scales=%v window=%d chunk=%d", a.KVHeads, a.QHeads, a.HeadDim, a.VDim(), a.Scales, a.Window, a.Chunk)
		case l.MLA != nil:
			dtypes[l.MLA.DType.String()] = true
			f["mla."+k] = fmt.Sprintf("latent=%d rope=%d format=%q", l.MLA.LatentDim, l.MLA.RopeDim, l.MLA.Format)
		case l.Indexer != nil:
			f["indexer"] = fmt.Sprintf("head_dim=%d", l.Indexer.HeadDim)
		case l.Recurrent != nil:
			r := l.Recurrent
			dtypes[r.ConvDType.String()] = true
			var b strings.Builder
			fmt.Fprintf(&b, "%s kernel=%d", r.Type, r.ConvKernel)
			for _, s := range r.Segments {
				fmt.Fprintf(&b, " %s=%dx%d", s.Name, s.Units, s.UnitWidth)
			}
			for _, s := range r.States {
				dtypes[s.DType.String()] = true
				fmt.Fprintf(&b, " %s=%dx%v:%s", s.Name, s.Heads, s.Dims, s.DType)
			}
			f["recurrent."+string(r.Type)] = b.String()
		}
		// The full per-layer spec, in order, goes into one digest.
		par := ""
		if l.Parallel {
			par = " parallel"
		}
		fmt.Fprintf(&layers, "%d %s %v%s %s\n", i, l.Name, l.Draft, par, specKey(l))
	}
	f["layer_kinds"] = joinCounts(kinds)
	f["dtypes"] = joinSet(dtypes)
	d := sha256.Sum256([]byte(layers.String()))
	f["layers_digest"] = hex.EncodeToString(d[:8])
	return f
}

// CompatHash is the compatibility hash of DESIGN section 3: a SHA-256 over
// CompatFields in sorted key order. Stable across runs and machines.
func CompatHash(m *Model, protocolVersion int) [32]byte {
	f := CompatFields(m, protocolVersion)
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%q\n", k, f[k])
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

func joinCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, m[k])
	}
	return strings.Join(parts, ",")
}

func joinSet(m map[string]bool) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}
