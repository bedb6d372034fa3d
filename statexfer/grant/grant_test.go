package grant

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"pgregory.net/rapid"
)

func sample() (*Grant, []uint32) {
	prompt := []uint32{1, 2, 3, 4, 5}
	ft := uint32(7)
	return &Grant{Params: Params{EngineID: "prefill-a", BootID: "b00t", DP: 0, Host: "127.0.0.1", Port: 5555, TP: 2, ReqID: "p-1",
		NumTokens: 4, Handoff: "decode-computes-last", FirstToken: &ft, BlockIDs: [][]int{{3, 4}, {9}}, Expiry: 1_700_000_000_123_456_789},
		Token: 0xfeed, Prompt: PromptHash(prompt)}, prompt
}

// params is a copy of g's params, as D would receive them.
func params(g *Grant) Params {
	p := g.Params
	p.BlockIDs = [][]int{}
	for _, ids := range g.BlockIDs {
		p.BlockIDs = append(p.BlockIDs, append([]int(nil), ids...))
	}
	return p
}

func TestSealOpenVerifies(t *testing.T) {
	k := RandomKey()
	g, prompt := sample()
	s := Seal(g, k)
	got, err := Open(s, k)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Check(params(g), prompt); err != nil {
		t.Fatal(err)
	}
	// Another key, no key on P, a flipped byte: all refused.
	if _, err := Open(s, RandomKey()); !errors.Is(err, ErrForged) {
		t.Fatalf("other key: %v", err)
	}
	if _, err := Open(Seal(g, nil), k); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned: %v", err)
	}
	b := []byte(s)
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 1
		if _, err := Open(string(c), k); err == nil {
			t.Fatalf("byte %d flipped: accepted", i)
		}
	}
}

func TestCheckNamesTheField(t *testing.T) {
	g, prompt := sample()
	cases := map[string]func(p *Params){
		"remote_engine_id":  func(p *Params) { p.EngineID = "prefill-b" },
		"remote_boot_id":    func(p *Params) { p.BootID = "x" },
		"remote_dp_rank":    func(p *Params) { p.DP = 1 },
		"remote_host":       func(p *Params) { p.Host = "10.0.0.1" },
		"remote_port":       func(p *Params) { p.Port++ },
		"tp_size":           func(p *Params) { p.TP = 4 },
		"remote_request_id": func(p *Params) { p.ReqID = "p-2" },
		"num_tokens":        func(p *Params) { p.NumTokens++ },
		"handoff":           func(p *Params) { p.Handoff = "prefill-samples-first" },
		"first_token":       func(p *Params) { p.FirstToken = nil },
		"remote_block_ids":  func(p *Params) { p.BlockIDs = [][]int{{3, 5}, {9}} },
		"lease_expiry":      func(p *Params) { p.Expiry += 5e9 },
	}
	for field, mod := range cases {
		p := params(g)
		p.BlockIDs = [][]int{{3, 4}, {9}}
		mod(&p)
		var fe *FieldError
		if err := g.Check(p, prompt); !errors.As(err, &fe) || fe.Field != field || !errors.Is(err, ErrMismatch) {
			t.Errorf("%s: %v", field, err)
		}
	}
	var fe *FieldError
	if err := g.Check(params(g), []uint32{1, 2, 3, 4, 6}); !errors.As(err, &fe) || fe.Field != "prompt" {
		t.Errorf("prompt: %v", err)
	}
	// The float seconds of lease_expiry lose nanoseconds: that is no mismatch.
	p := params(g)
	p.Expiry = int64(float64(g.Expiry)/1e9*1e9) - 0
	if err := g.Check(p, prompt); err != nil {
		t.Errorf("float expiry: %v", err)
	}
}

func TestRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		g := &Grant{Params: Params{
			EngineID: rapid.StringN(0, 20, MaxString).Draw(t, "engine"), BootID: rapid.StringN(0, 16, MaxString).Draw(t, "boot"),
			DP: rapid.IntRange(0, 64).Draw(t, "dp"), Host: rapid.StringN(0, 20, MaxString).Draw(t, "host"),
			Port: rapid.IntRange(0, 65535).Draw(t, "port"), TP: rapid.IntRange(1, 64).Draw(t, "tp"),
			ReqID:     rapid.StringN(0, 40, MaxString).Draw(t, "req"),
			NumTokens: rapid.IntRange(0, 1<<20).Draw(t, "n"), Handoff: rapid.SampledFrom([]string{"", "decode-computes-last"}).Draw(t, "handoff"),
			BlockIDs: rapid.SliceOfN(rapid.SliceOfN(rapid.IntRange(0, 1<<24), 0, 30), 0, 6).Draw(t, "blocks"),
			Expiry:   rapid.Int64().Draw(t, "expiry"),
		}, Token: rapid.Uint64Min(1).Draw(t, "token")}
		if rapid.Bool().Draw(t, "first") {
			v := rapid.Uint32().Draw(t, "ft")
			g.FirstToken = &v
		}
		g.Prompt = PromptHash(rapid.SliceOfN(rapid.Uint32(), 0, 50).Draw(t, "prompt"))
		var k *Key
		if rapid.Bool().Draw(t, "signed") {
			k = RandomKey()
		}
		got, err := Open(Seal(g, k), k)
		if err != nil {
			t.Fatal(err)
		}
		for i := range g.BlockIDs { // nil and empty decode alike
			if len(g.BlockIDs[i]) == 0 {
				g.BlockIDs[i] = []int{}
			}
		}
		if Seal(got, k) != Seal(g, k) {
			t.Fatalf("round trip differs: %+v vs %+v", got, g)
		}
	})
}

func FuzzOpen(f *testing.F) {
	k, _ := NewKey(make([]byte, 32))
	g, _ := sample()
	f.Add(Seal(g, k))
	f.Add(Seal(g, nil))
	f.Add("SFhHAQA")
	f.Fuzz(func(t *testing.T, s string) {
		for _, key := range []*Key{nil, k} {
			got, err := Open(s, key)
			if err != nil {
				if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrForged) && !errors.Is(err, ErrUnsigned) {
					t.Fatalf("error outside the sentinels: %v", err)
				}
				continue
			}
			// Anything accepted under the key was sealed with it, and every
			// accepted grant re-encodes to a grant that opens to the same.
			again, err := Open(Seal(got, key), key)
			if err != nil || Seal(again, key) != Seal(got, key) {
				t.Fatalf("re-seal: %v", err)
			}
		}
	})
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	k := RandomKey()
	path := filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(path, []byte(k.Hex()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LoadKey(path)
	if err != nil || got.InternalToken() != k.InternalToken() {
		t.Fatalf("load: %v", err)
	}
	if RandomKey().InternalToken() == k.InternalToken() {
		t.Fatal("two keys derive one internal token")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(path); !errors.Is(err, ErrKey) {
		t.Fatalf("world-readable: %v", err)
	}
	short := filepath.Join(dir, "short.key")
	_ = os.WriteFile(short, []byte("abcd\n"), 0o600)
	if _, err := LoadKey(short); !errors.Is(err, ErrKey) {
		t.Fatalf("short: %v", err)
	}
	nothex := filepath.Join(dir, "nothex.key")
	_ = os.WriteFile(nothex, []byte("zz\n"), 0o600)
	if _, err := LoadKey(nothex); !errors.Is(err, ErrKey) {
		t.Fatalf("not hex: %v", err)
	}
	if !TokenEqual("abc", "abc") || TokenEqual("abc", "abd") || TokenEqual("abc", "ab") {
		t.Fatal("TokenEqual")
	}
}
