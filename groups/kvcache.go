package groups

import (
	"fmt"
	"strings"
)

// KVCacheDType is how per-token attention caches are stored, the serving
// choice of vLLM's --kv-cache-dtype. It changes the spec (dtypes, scales,
// MLA format), so the compatibility hash covers it: a P and a D that chose
// differently refuse each other at the handshake.
type KVCacheDType string

// KV cache dtypes.
const (
	// KVCacheAuto keeps the dtypes of the spec (the model dtype).
	KVCacheAuto KVCacheDType = "auto"
	// KVCacheFP8 (alias fp8_e4m3) stores attention K and V as fp8 e4m3 with
	// one fp32 scale per token, head and K/V, moved with their blocks, and
	// MLA latents as fp8 e4m3 (one scale per tensor, a weight, not state).
	KVCacheFP8 KVCacheDType = "fp8"
	// KVCacheFP8E5M2 is KVCacheFP8 with fp8 e5m2 values.
	KVCacheFP8E5M2 KVCacheDType = "fp8_e5m2"
	// KVCacheFP8DSMLA stores MLA latents in DeepSeek's 656-byte fp8_ds_mla
	// layout (512 fp8 NoPE values, 4 fp32 scales, 64 bf16 RoPE values);
	// only for models whose per-token layers are all MLA (or indexer).
	KVCacheFP8DSMLA KVCacheDType = "fp8_ds_mla"
)

// KVCacheDTypes lists the accepted values of ParseKVCacheDType.
func KVCacheDTypes() []string {
	return []string{"auto", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_ds_mla"}
}

// ParseKVCacheDType parses a --kv-cache-dtype value ("" is auto).
func ParseKVCacheDType(s string) (KVCacheDType, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return KVCacheAuto, nil
	case "fp8", "fp8_e4m3":
		return KVCacheFP8, nil
	case "fp8_e5m2":
		return KVCacheFP8E5M2, nil
	case "fp8_ds_mla":
		return KVCacheFP8DSMLA, nil
	}
	return "", fieldErr("kv_cache_dtype", fmt.Sprintf("unknown value %q (want one of %s)", s, strings.Join(KVCacheDTypes(), ", ")))
}

// WithKVCacheDType returns a copy of m whose per-token caches are stored as
// d says; recurrent state (conv and SSM) is never changed (vLLM does not
// quantize it either), nor the indexer cache (already fp8 with scales).
// It refuses, with a *FieldError on "kv_cache_dtype": an unknown d;
// fp8_ds_mla for a model without MLA layers, or with attention layers
// (draft layers included) that the format cannot hold; fp8_ds_mla for MLA
// layers that are not 512 latent + 64 rope; fp8 for an already
// fp8_ds_mla cache. auto returns m unchanged (a copy).
func (m *Model) WithKVCacheDType(d KVCacheDType) (*Model, error) {
	out := m.Clone()
	bad := func(msg string) (*Model, error) { return nil, fieldErr("kv_cache_dtype", string(d)+": "+msg) }
	switch d {
	case "", KVCacheAuto:
		return out, nil
	case KVCacheFP8, KVCacheFP8E5M2:
		dt := FP8E4M3
		if d == KVCacheFP8E5M2 {
			dt = FP8E5M2
		}
		for i := range out.Layers {
			l := &out.Layers[i]
			switch {
			case l.Attention != nil:
				l.Attention.DType, l.Attention.Scales = dt, true
			case l.MLA != nil:
				if l.MLA.Format != MLAPlain {
					return bad(fmt.Sprintf("layer %s is already %s", l.Name, l.MLA.Format))
				}
				l.MLA.DType = dt
			}
		}
	case KVCacheFP8DSMLA:
		mla := 0
		for i := range out.Layers {
			l := &out.Layers[i]
			switch {
			case l.Attention != nil:
				return bad(fmt.Sprintf("layer %s is a %s layer, which fp8_ds_mla cannot store (use fp8)", l.Name, l.Kind))
			case l.MLA != nil:
				if l.MLA.LatentDim != 512 || l.MLA.RopeDim != 64 {
					return bad(fmt.Sprintf("layer %s has latent %d + rope %d; fp8_ds_mla needs 512 + 64", l.Name, l.MLA.LatentDim, l.MLA.RopeDim))
				}
				l.MLA.DType, l.MLA.Format = FP8E4M3, MLAFP8DS
				mla++
			}
		}
		if mla == 0 {
			return bad("the model has no MLA layers")
		}
	default:
		return bad("unknown value")
	}
	return out, out.Validate()
}
