package refmodel_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
)

// longGoldenDigests are the SHA-256 of the tokens and every byte of state
// that a 320-token prompt (prefilled in two calls) and 4 decoded tokens
// leave, per family (seed 5), recorded from the sequential attention
// (one head after another, keys gathered per position) before the
// parallel heads and the run's flat key arrays: long enough for
// gpt-oss's 128-token window to slide, for attention to run its heads in
// parallel and for the run cache to carry its key arrays across a call.
// If the model is changed on purpose, the digests change with it.
var longGoldenDigests = map[string]string{
	"kimi-linear-48b-a3b": "bc731be85079efb27a572ae14b019904bd84783f64285a08c93c6de61a7ba314",
	"kimi-k2.5-eagle3":    "fc3cfb0fb2ba63484b85997772f7c86444c0317a6a6d4c8cde5deac38b300016",
	"falcon-h1-7b":        "c51749d592f3209a2a08f80c3e3e29d309e98c1bfa905c10ec75e34d9cfec88d",
	"qwen3.5-27b":         "f06ea23f3b18d41e6bab6dc4c38c19a01880bdd8101bfecdc39226b9368038a5",
	"deepseek-v3.2":       "663f6c8096def5f3910d4ace9f40ff886b47ed70b171a4487b6adef11107665f",
	"gemma-3-27b":         "0bc8fb7a32cab9ca947dffe0b9629bd5e944c91027a1f300b2f1947586b4245a",
	"gpt-oss-20b":         "e66a6daf973657dfb1da14286241849bba4edb69f269943ca9bc5701d435350e",
	"nemotron-nano-9b-v2": "77aa9c28e9fb8123d703bc576c4ce3304b403eb43355653b120e086fe958fbd8",
	"lfm2-1.2b":           "afc7e0fabeaa44ead4126770163fa0cb9fd72d5781b7609f3990f486eaeb38cb",
	"qwen3.5-27b fp8":     "5e0deead8413683030354fba6083e3ae1c3e74ab7e7c7df517f6571453f2fe10",
	"gpt-oss-20b fp8":     "6d7695f52e2e1592cbd96729f9e38342bd1bbd1b0f957e16d07a0cd585675176",
}

func longGoldenDigest(t *testing.T, name string) string {
	preset, o := name, groups.PresetOptions{}
	if p, ok := strings.CutSuffix(name, " fp8"); ok {
		preset, o.KVCacheDType = p, groups.KVCacheFP8 // scaled K and V
	}
	mini := presetMini(t, preset, o)
	m := refmodel.New(mini, 5)
	const n, split, decode = 320, 203, 4
	prompt := make([]uint32, n)
	for i := range prompt {
		prompt[i] = uint32(i*29+5) % refmodel.Vocab
	}
	in := newInstance(t, mini, groups.InstanceConfig{TP: 2}, n+decode, 0, 11)
	h := sha256.New()
	next, err := m.Prefill(in.store, prompt, 0, split)
	if err != nil {
		t.Fatal(err)
	}
	binary.Write(h, binary.LittleEndian, next)
	toks, err := m.Generate(in.store, prompt, split, decode)
	if err != nil {
		t.Fatal(err)
	}
	binary.Write(h, binary.LittleEndian, toks)
	for _, mem := range in.mems {
		for _, pool := range mem.Pools {
			for _, blk := range pool {
				h.Write(blk)
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestLongOutputsUnchanged: long prompts compute the recorded bits
// (longGoldenDigests).
func TestLongOutputsUnchanged(t *testing.T) {
	for name, want := range longGoldenDigests {
		t.Run(name, func(t *testing.T) {
			got := longGoldenDigest(t, name)
			if got != want {
				t.Fatalf("%s computes different bits: digest %s, recorded %s", name, got, want)
			}
		})
	}
}
