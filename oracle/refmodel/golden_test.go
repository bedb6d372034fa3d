package refmodel_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
)

// goldenDigests are the SHA-256 of every logit bit, every token and every
// byte of state a 40-token prompt and 6 decoded tokens leave, per preset
// miniature (seed 3), recorded from the position-by-position
// implementation before the run cache and the batched dot products
// (runcache.go, dots, attend): a faster model must compute the same
// bits, and this is what says so across every family. If the model is
// changed on purpose, the digests change with it, in the same commit.
var goldenDigests = map[string]string{
	"qwen3.5-0.8b":            "7722fa7be1b8c37ddfd4ef710cedd16d034e8aff62d2895b25c4ba51aa70925a",
	"qwen3.5-2b":              "7722fa7be1b8c37ddfd4ef710cedd16d034e8aff62d2895b25c4ba51aa70925a",
	"qwen3.5-4b":              "4f0700f94bee020057ed8e2185d86cceaa64a8ac957109f80a63c4c598b0510e",
	"qwen3.5-9b":              "4f0700f94bee020057ed8e2185d86cceaa64a8ac957109f80a63c4c598b0510e",
	"qwen3.5-27b":             "b7c78f0259c0300fd58b094720754ec0ecd3f4c1d21428a5f4820543a9bb46b8",
	"qwen3.5-35b-a3b":         "e86933ed57c9935e51d59a830f3fcebfe84c636975b66b53222b8adeef5f3f6a",
	"qwen3.5-122b-a10b":       "5741526bdd840d64d27f2bf21dba1c2c595f29ba69bd1554555109dc7da92ee4",
	"qwen3.5-397b-a17b":       "b13de98dc742e65524c5f37419d216069b08ba02cbb7046c7511ac9513d2f7f6",
	"qwen3-next-80b-a3b":      "5e14177c29f2d4493fdd1bd0142a411c79b3dd6b30df01b3a5a6cfb14aba9446",
	"kimi-linear-48b-a3b":     "ae69ae1e810c7e5707e921d77a3490f69a0d07f9a22d05f228fd061a82e28b0e",
	"kimi-k2.5":               "4352755010a5b0401fb5cb3c937456caf8d543d301e3c73c467742ce50941d63",
	"kimi-k2.5-eagle3":        "78319cfcfd2ddd7744abc57a3e11080e37a1fb22424ce2c2e826ea23da44a2f0",
	"deepseek-v3":             "4352755010a5b0401fb5cb3c937456caf8d543d301e3c73c467742ce50941d63",
	"deepseek-v3.2":           "a21a38288ff7b7914ec11c1f41cac4f2f56c26e09c02aa200ab3712826c5e573",
	"gemma-3-4b":              "85b36c2765a422ef4da7d9f04c476f5d33d20360e07a4290962e0f4fd05dadae",
	"gemma-3-12b":             "777c3b2ee7458453efd8942777b0fc5641687f514b08dfb5dd1627eb9c43cd9a",
	"gemma-3-27b":             "5850ac4446441147fb8971bd6c9721cc21ae7eae281cbbd38ac2f24f2c2c21a6",
	"gpt-oss-20b":             "1daf14b528145677376d632e74562da6f04f89ebd5ae50d41f2d9e5492c87f11",
	"gpt-oss-120b":            "4a0a402822e2ba2b1c4515cd4a36b556810fde1e2133caa39963aa6e8944e6cd",
	"nemotron-3-nano-30b-a3b": "ace04801cc7160598b91a1fd46d76694326fa0f1965bf44858cdfb5e4dc0c6d4",
	"nemotron-nano-9b-v2":     "d81add7be6f93e1739eafe81286e5c60325606dfeca4156b86593f55467451da",
	"llama-3.1-8b":            "afc9a355e222f8423d33555bc0e2fefa3603d6ff858d87f638e148cfdab342e5",
	"llama-3.1-70b":           "371b47ae2b2bf1068ff7ccfc4dbb43f83152a16e1d6db379ae9514c057b70ae2",
	"jamba-1.5-mini":          "30591183715fd46b8c018aad01508a0a244ff731aba2edc68300cce57b848f79",
	"falcon-h1-7b":            "a61b2dcb1b71241b1fcd833586146ab8ad2f6cdb23c28d8b53f4c10bf117d44f",
	"granite-4.0-h-tiny":      "0a49e934bdff756d1e8675880b9672ef2d37886269663e45ba61ef4c7382a7b0",
	"lfm2-1.2b":               "5f7abe7c94035fbb8854c81b798a280185da7a2960b66332264e343258f07023",
	"bamba-9b":                "65b88cf52a99fb20e7630c13d4309a832f5d32aa2bab86e4b3226b6a2b4a5987",
}

func goldenDigest(t *testing.T, name string) string {
	spec, err := groups.Preset(name, groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mini, err := refmodel.Miniature(spec)
	if err != nil {
		t.Fatal(err)
	}
	m := refmodel.New(mini, 3)
	prompt := make([]uint32, 40)
	for i := range prompt {
		prompt[i] = uint32(i*37+11) % refmodel.Vocab
	}
	h := sha256.New()
	put := func(v []float32) {
		var b [4]byte
		for _, x := range v {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(x))
			h.Write(b[:])
		}
	}
	// Prefill in two calls (the second continues from the first's state),
	// then decode step by step, hashing every position's logits.
	in := newInstance(t, mini, groups.InstanceConfig{TP: 2}, 46, 0, 5)
	if _, err := m.Prefill(in.store, prompt, 0, 17); err != nil {
		t.Fatal(err)
	}
	toks, err := m.Generate(in.store, prompt, 17, 6)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks {
		binary.Write(h, binary.LittleEndian, tok)
	}
	ms := refmodel.NewMapStore(mini)
	seq := append(append([]uint32(nil), prompt...), toks...)
	for pos, tok := range seq[:len(seq)-1] {
		out, err := m.Forward(ms, pos, tok)
		if err != nil {
			t.Fatal(err)
		}
		put(out.Logits)
	}
	for _, mem := range in.mems {
		for _, pool := range mem.Pools {
			for _, blk := range pool {
				h.Write(blk)
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestOutputsUnchanged: every preset's miniature computes the recorded
// bits (goldenDigests).
func TestOutputsUnchanged(t *testing.T) {
	for _, name := range groups.PresetNames() {
		t.Run(name, func(t *testing.T) {
			got := goldenDigest(t, name)
			want, ok := goldenDigests[name]
			if !ok {
				t.Fatalf("no recorded digest for %s: %q", name, got)
			}
			if got != want {
				t.Fatalf("%s computes different bits: digest %s, recorded %s", name, got, want)
			}
		})
	}
}
