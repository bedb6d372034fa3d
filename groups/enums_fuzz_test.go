package groups_test

import (
	"errors"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
)

// fzGroupsSentinel reports whether err wraps one of the package's sentinels
// (every error groups returns must).
func fzGroupsSentinel(err error) bool {
	for _, s := range []error{groups.ErrInvalidSpec, groups.ErrUnsupported, groups.ErrUnknownPreset,
		groups.ErrImpossibleTP, groups.ErrBadGeometry} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// FuzzParseEnums: the names of kinds, dtypes, kv-cache dtypes and layouts
// (read from model JSON, Hugging Face configs and flags). An accepted name
// has a canonical spelling that parses to the same value (and for kinds
// and dtypes MarshalText and UnmarshalText agree with it); a refused one is
// an error wrapping a groups sentinel.
func FuzzParseEnums(f *testing.F) {
	for _, s := range []string{"full_attention", "sliding_window", "chunked_local", "mla", "indexer", "recurrent", "invalid",
		"bf16", "torch.float16", " FP8_E4M3 ", "float8_e5m2", "u8", "auto", "fp8_ds_mla", "Unified", "separate", "hnd", "NHD", "ds", "Sd", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		check := func(what string, err error) bool {
			t.Helper()
			if err != nil && !fzGroupsSentinel(err) {
				t.Fatalf("%s(%q): error %v wraps no groups sentinel", what, s, err)
			}
			return err == nil
		}
		if k, err := groups.ParseKind(s); check("ParseKind", err) {
			txt, err := k.MarshalText()
			var k2 groups.Kind
			if err != nil || k2.UnmarshalText(txt) != nil || k2 != k || k.String() != s {
				t.Fatalf("kind %q: MarshalText %q (%v) gives %v", s, txt, err, k2)
			}
		}
		if d, err := groups.ParseDType(s); check("ParseDType", err) {
			txt, err := d.MarshalText()
			var d2 groups.DType
			if err != nil || d2.UnmarshalText(txt) != nil || d2 != d {
				t.Fatalf("dtype %q: MarshalText %q (%v) gives %v", s, txt, err, d2)
			}
		} else {
			var d2 groups.DType
			if err := d2.UnmarshalText([]byte(s)); err == nil {
				t.Fatalf("UnmarshalText accepted dtype %q that ParseDType refuses", s)
			}
		}
		if d, err := groups.ParseKVCacheDType(s); check("ParseKVCacheDType", err) {
			if d2, err := groups.ParseKVCacheDType(string(d)); err != nil || d2 != d {
				t.Fatalf("kv cache dtype %q: canonical %q gives %q (%v)", s, d, d2, err)
			}
		}
		if v, err := groups.ParseMemoryLayout(s); check("ParseMemoryLayout", err) {
			if v2, err := groups.ParseMemoryLayout(string(v)); err != nil || v2 != v {
				t.Fatalf("memory layout %q: canonical %q gives %q (%v)", s, v, v2, err)
			}
		}
		if v, err := groups.ParseAttnLayout(s); check("ParseAttnLayout", err) {
			if v2, err := groups.ParseAttnLayout(string(v)); err != nil || v2 != v {
				t.Fatalf("attention layout %q: canonical %q gives %q (%v)", s, v, v2, err)
			}
		}
		if v, err := groups.ParseConvLayout(s); check("ParseConvLayout", err) {
			if v2, err := groups.ParseConvLayout(string(v)); err != nil || v2 != v {
				t.Fatalf("conv layout %q: canonical %q gives %q (%v)", s, v, v2, err)
			}
		}
	})
}
