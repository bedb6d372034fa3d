package engine

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hybridxfer/hybridxfer/backend"
	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/hma"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/tokenizer"
)

// conversation is a bidirectional P/D pair whose decode instance runs on
// a clock tests can move forward.
type conversation struct {
	*pd
	dSkew      atomic.Int64 // nanoseconds added to D's clock
	pReg, dReg *prometheus.Registry
	finals     sync.Map // D's request id -> *refmodel.Snapshot of its final state
}

func newConversation(t *testing.T, model string, pc, dc groups.InstanceConfig, mod func(p, d *Config)) *conversation {
	t.Helper()
	m, err := groups.Preset(model, groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := &conversation{pReg: prometheus.NewRegistry(), dReg: prometheus.NewRegistry()}
	c.pd = newPD(t, m, pc, dc, func(p, d *Config) {
		p.Bidirectional, d.Bidirectional = true, true
		// Each side serves a handshake and fetches the other's.
		p.Fetch, d.Serve = d.Fetch, p.Serve
		p.Metrics = NewMetrics(c.pReg, "P", backend.RolePrefill)
		d.Metrics = NewMetrics(c.dReg, "D", backend.RoleDecode)
		d.ConversationTTL = time.Minute
		d.Now = func() time.Time { return time.Now().Add(time.Duration(c.dSkew.Load())) }
		d.OnFinish = func(id string, st refmodel.Store, n int) {
			if snap, err := c.d.Model().Snapshot(st, n); err == nil {
				c.finals.Store(id, snap)
			}
		}
		if mod != nil {
			mod(p, d)
		}
	})
	return c
}

// turn runs one turn: P (reading prev's export when given), then D.
func (c *conversation) turn(t *testing.T, id, prompt string, n int, prev *backend.KVTransferParams) *backend.GenResult {
	t.Helper()
	ctx := context.Background()
	pr, err := c.p.Generate(ctx, backend.GenRequest{ID: id, Prompt: prompt, MaxTokens: 1, KV: &backend.KVTransferParams{DoRemoteDecode: true, RemotePrefix: prev}}, nil)
	if err != nil {
		t.Fatalf("%s: prefill: %v", id, err)
	}
	dr, err := c.d.Generate(ctx, backend.GenRequest{ID: id, Prompt: prompt, MaxTokens: n, KV: pr.KV}, nil)
	if err != nil {
		t.Fatalf("%s: decode: %v", id, err)
	}
	ms := refmodel.NewMapStore(c.d.Spec())
	toks := tokenizer.Tokenize(prompt)
	want, err := c.d.Model().Generate(ms, toks, 0, n)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(dr.Tokens) != fmt.Sprint(want) {
		t.Fatalf("%s: answer %v, the monolithic run answers %v", id, dr.Tokens, want)
	}
	// D's memory holds the monolithic state of every position, byte for
	// byte (a prefix read from the wrong tokens would differ here even
	// where the answer happens not to).
	wantSnap, err := c.d.Model().Snapshot(ms, refmodel.Computed(len(toks), n))
	if err != nil {
		t.Fatal(err)
	}
	var got *refmodel.Snapshot
	c.finals.Range(func(k, v any) bool {
		if strings.HasSuffix(k.(string), "-"+id) {
			got = v.(*refmodel.Snapshot)
		}
		return true
	})
	if got == nil {
		t.Fatalf("%s: D reported no final state", id)
	}
	if err := got.Diff(wantSnap); err != nil {
		t.Fatalf("%s: D's state differs from the monolithic run's: %v", id, err)
	}
	if dr.KV == nil || dr.KV.Handoff != backend.DecodeExport {
		t.Fatalf("%s: decode answered without an export: %+v", id, dr.KV)
	}
	if got, want := dr.KV.NumTokens, refmodel.Computed(len(tokenizer.Tokenize(prompt)), n); got != want {
		t.Fatalf("%s: export of %d tokens, D computed %d", id, got, want)
	}
	return dr
}

// computed is what P and D computed for the request of client id
// turnID: every position's count.
func (c *conversation) computed(turnID string, total int) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	count := make([]int, total)
	for _, m := range []map[string][][2]int{c.pCompute, c.dCompute} {
		for rid, rs := range m {
			if !strings.HasSuffix(rid, "-"+turnID) {
				continue
			}
			for _, r := range rs {
				for p := r[0]; p < min(r[1], total); p++ {
					count[p]++
				}
			}
		}
	}
	return count
}

// checkComputed: turn turnID computed positions [from, total) once each
// and none below from (those were read from the previous turn's export).
func (c *conversation) checkComputed(t *testing.T, turnID string, from, total int) {
	t.Helper()
	for p, n := range c.computed(turnID, total) {
		if want := map[bool]int{true: 0, false: 1}[p < from]; n != want {
			t.Fatalf("%s: position %d computed %d times, want %d (read from decode below %d)", turnID, p, n, want, from)
		}
	}
}

func (c *conversation) declines(reason string) float64 {
	return testutil.ToFloat64(c.p.cfg.Metrics.convDeclines.WithLabelValues(reason))
}

// heldOnD is how many holds D has once the releases under way (read
// completions and drops D handles just after a turn) settled at want or
// below, or after a few seconds.
func (c *conversation) heldOnD(want int) int {
	held := func() int {
		c.d.mu.Lock()
		defer c.d.mu.Unlock()
		return c.d.alloc.Stats().Holds
	}
	for deadline := time.Now().Add(5 * time.Second); held() > want && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	return held()
}

// TestConversationReadsFromDecode: over three turns, each turn's prompt
// the last one's, its answer (token for token) and a new message, the
// prefill instance reads everything the decode instance computed so far
// and computes only the rest; the answers equal the monolithic run's.
// Hybrid (GDN + attention), windowed, MLA and attention-only models,
// with different tp, block sizes and layouts on the two sides (the read
// goes D -> P, the opposite of the first transfer), and each export is
// released by the next turn's reads.
func TestConversationReadsFromDecode(t *testing.T) {
	for _, tc := range []struct {
		model string
		p, d  groups.InstanceConfig
	}{
		{"qwen3.5-27b", groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 4, AttnLayout: groups.NHD, ConvLayout: groups.SD}},
		{"gemma-3-4b", groups.InstanceConfig{TP: 1, BlockSize: 8, KernelBlockSize: 8}, groups.InstanceConfig{TP: 2, BlockSize: 32}},
		{"deepseek-v3.2", groups.InstanceConfig{TP: 4}, groups.InstanceConfig{TP: 2}},
		{"llama-3.1-8b", groups.InstanceConfig{TP: 1}, groups.InstanceConfig{TP: 2, BlockSize: 32}},
	} {
		t.Run(tc.model, func(t *testing.T) {
			c := newConversation(t, tc.model, tc.p, tc.d, nil)
			prompt := "user: what is the capital of France?\nassistant: "
			var prev *backend.KVTransferParams
			reused := 0
			for turn := range 3 {
				id := fmt.Sprintf("turn%d", turn)
				dr := c.turn(t, id, prompt, 5, prev)
				from := 0
				if prev != nil {
					from = prev.NumTokens
				}
				c.checkComputed(t, id, from, dr.KV.NumTokens)
				// What P did not compute came from D's export or, for the
				// earlier prompts' blocks, P's own prefix cache.
				if prev != nil {
					reused += prev.NumTokens
				}
				m := c.p.cfg.Metrics
				fromD := testutil.ToFloat64(m.convReused)
				if got := int(fromD + testutil.ToFloat64(m.prefixHits)); got != reused {
					t.Fatalf("%s: %v tokens read from decode + %v prefix cache hits, want %d", id, fromD, testutil.ToFloat64(m.prefixHits), reused)
				}
				if prev != nil && fromD == 0 {
					t.Fatalf("%s: nothing read from decode", id)
				}
				prev = dr.KV
				prompt += tokenizer.TokenText(dr.Tokens) + "\nuser: and then?\nassistant: "
			}
			for _, r := range DeclineReasons {
				if n := c.declines(r); n != 0 {
					t.Errorf("%v declines for %s", n, r)
				}
			}
			waitIdle(t, c.p)
			// Every export but the last was released by the next turn's reads.
			if n := c.heldOnD(1); n != 1 {
				t.Fatalf("decode holds %d exports, want the last turn's only", n)
			}
		})
	}
}

// TestConversationRewrittenHistory: the client changed an earlier turn
// (as clients that strip reasoning traces do): the export no longer
// matches the prompt. A hybrid model declines and computes everything; an
// attention-only model reads the part before the change (whole chain
// blocks) and computes from there. Answers stay equal to the monolithic
// run's; the export is dropped, not left held.
func TestConversationRewrittenHistory(t *testing.T) {
	for _, tc := range []struct {
		name, model string
		partial     bool
		p, d        groups.InstanceConfig
		dMode       hma.RecurrentMode
		declined    string
	}{
		{"qwen3.5-27b", "qwen3.5-27b", false, groups.InstanceConfig{TP: 1}, groups.InstanceConfig{TP: 2}, hma.RecurrentNone, "mismatch"},
		{"llama-3.1-8b", "llama-3.1-8b", true, groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 1}, hma.RecurrentNone, ""},
		// D keeps a state per block (mamba cache mode all): the hybrid
		// model reads up to the last block boundary before the change
		// at which D computed the state.
		{"qwen3.5-27b decode mode all", "qwen3.5-27b", true, groups.InstanceConfig{TP: 1}, groups.InstanceConfig{TP: 2, BlockSize: 32}, hma.RecurrentAll, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newConversation(t, tc.model, tc.p, tc.d, func(_, d *Config) { d.MambaCacheMode = tc.dMode })
			first := "user: tell me about a long river in Egypt\nassistant: "
			d1 := c.turn(t, "turn0", first, 40, nil)
			// Rewrite answer token 25 (past what P's own prefix cache
			// holds of the first prompt, so the part before it comes from D).
			ans := append([]uint32(nil), d1.Tokens...)
			ans[25] = (ans[25] + 1) % refmodel.Vocab
			q := len(tokenizer.Tokenize(first)) + 25
			rewritten := first + tokenizer.TokenText(ans) + "\nuser: more\nassistant: "
			dr := c.turn(t, "turn1", rewritten, 4, d1.KV)
			from := 0
			if tc.partial {
				from = q / 16 * 16
				if tc.dMode == hma.RecurrentAll {
					// The last boundary of D's recurrent blocks (and of
					// the chain's) before the change, above turn 0's
					// handoff (D computed the states from there on).
					handoff := len(tokenizer.Tokenize(first)) - 1
					for _, gg := range c.d.side.Ranks[0].Groups {
						if gg.Kind == groups.Recurrent {
							for from > 0 && from%gg.BlockSize != 0 {
								from -= 16
							}
						}
					}
					if from-1 < handoff {
						t.Fatalf("test setup: no recurrent boundary between the handoff %d and the change at %d", handoff, q)
					}
				}
				if got := testutil.ToFloat64(c.p.cfg.Metrics.convReused); got == 0 {
					t.Fatal("nothing read from decode")
				}
			}
			c.checkComputed(t, "turn1", from, dr.KV.NumTokens)
			if tc.declined != "" && c.declines(tc.declined) != 1 {
				t.Fatalf("declines %q = %v, want 1", tc.declined, c.declines(tc.declined))
			}
			if n := c.heldOnD(1); n != 1 {
				t.Fatalf("decode holds %d exports, want 1 (the rewritten turn's)", n)
			}
		})
	}
}

// TestConversationExpired: D's lease on the export ran out (its clock
// moved past the TTL and the sweeper freed the blocks, which another
// request may reuse) before the next turn: P must not read them; it
// computes the prompt and answers correctly.
func TestConversationExpired(t *testing.T) {
	c := newConversation(t, "qwen3.5-27b", groups.InstanceConfig{TP: 2}, groups.InstanceConfig{TP: 1}, nil)
	first := "user: hello there\nassistant: "
	d1 := c.turn(t, "turn0", first, 4, nil)
	c.dSkew.Store(int64(2 * time.Minute))
	if ids := c.d.Sweep(); len(ids) != 1 {
		t.Fatalf("sweep released %v, want the export", ids)
	}
	// Another request reuses D's blocks.
	c.turn(t, "other", "user: something else entirely, to take the blocks\nassistant: ", 4, nil)
	second := first + tokenizer.TokenText(d1.Tokens) + "\nuser: again\nassistant: "
	dr := c.turn(t, "turn1", second, 4, d1.KV)
	c.checkComputed(t, "turn1", 0, dr.KV.NumTokens)
	if c.declines("expired") != 1 {
		t.Fatalf("declines: expired %v, want 1", c.declines("expired"))
	}
}

// TestConversationUnkeptBoundary: a decode instance in mamba cache mode
// all keeps a state block per boundary, but only those after the handoff
// hold a state it computed (it loaded P's running state, not P's boundary
// states; the allocator leaves the earlier ones null and the export says
// so): a history rewritten before the handoff must not read a boundary
// below it; P declines and computes.
func TestConversationUnkeptBoundary(t *testing.T) {
	c := newConversation(t, "qwen3.5-27b", groups.InstanceConfig{TP: 1}, groups.InstanceConfig{TP: 2, BlockSize: 16},
		func(_, d *Config) { d.MambaCacheMode = hma.RecurrentAll })
	first := "user: tell me about a long river in Egypt and the countries it runs through\nassistant: "
	d1 := c.turn(t, "turn0", first, 20, nil)
	if handoff := len(tokenizer.Tokenize(first)) - 1; handoff <= 48 {
		t.Fatalf("test setup: handoff %d, want it past the boundaries 16, 32, 48", handoff)
	}
	b := []byte(first)
	b[40] = tokenizer.TokenText([]uint32{(tokenizer.Tokenize(first[40:41])[0] + 1) % refmodel.Vocab})[0]
	rewritten := string(b) + tokenizer.TokenText(d1.Tokens) + "\nuser: more\nassistant: "
	dr := c.turn(t, "turn1", rewritten, 4, d1.KV)
	c.checkComputed(t, "turn1", 0, dr.KV.NumTokens)
	if c.declines("mismatch") != 1 {
		t.Fatalf("declines: mismatch %v, want 1", c.declines("mismatch"))
	}
}
