package refmodel_test

import (
	"math/rand/v2"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/oracle/refmodel"
	"github.com/hybridxfer/hybridxfer/proptest"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"pgregory.net/rapid"
)

// instance is one request's cache memory on every rank of one instance
// (P or D), with the request's block table.
type instance struct {
	side    *plan.Side
	mems    []*plan.RankMemory
	tab     [][]int
	scratch [][]int // recurrent groups' scratch slots
	store   *refmodel.RankStore
}

// newInstance lays out a request of total positions on an instance of cfg.
// Per-token groups get blocks from position layer.LiveStart(from) on and
// null before (what D holds when it continues at from); recurrent groups
// one state slot. Ids are shuffled, pools keep spare blocks, and memory
// starts as random garbage, so reading state that was never written shows.
func newInstance(t tb, spec *groups.Model, cfg groups.InstanceConfig, total, from int, seed uint64) *instance {
	t.Helper()
	return newScratchInstance(t, spec, cfg, total, from, 0, seed)
}

// newScratchInstance is newInstance with scratch speculative slots per
// recurrent group besides the state slot (inst.scratch, in the store).
func newScratchInstance(t tb, spec *groups.Model, cfg groups.InstanceConfig, total, from, scratch int, seed uint64) *instance {
	t.Helper()
	cfg = cfg.WithDefaults()
	rng := rand.New(rand.NewPCG(seed, 7))
	side := &plan.Side{}
	for r := 0; r < cfg.TP; r++ {
		g, err := groups.NewGeometry(spec, cfg, r)
		if err != nil {
			t.Fatalf("geometry of %s rank %d %+v: %v", spec.Name, r, cfg, err)
		}
		side.Ranks = append(side.Ranks, g)
	}
	g0 := side.Ranks[0]
	need := make([]int, len(g0.Pools))
	first := make([]int, len(g0.Groups))
	count := make([]int, len(g0.Groups))
	for gi, gg := range g0.Groups {
		if gg.Kind == groups.Recurrent {
			count[gi] = 1 + scratch
		} else {
			l := &spec.Layers[gg.Layers[0]]
			first[gi] = l.LiveStart(from) / gg.BlockSize
			count[gi] = max(0, (total+gg.BlockSize-1)/gg.BlockSize-first[gi])
		}
		need[gg.Pool] += count[gi]
	}
	ids := make([][]int, len(need))
	for p, n := range need {
		side.NumBlocks = append(side.NumBlocks, n+1+rng.IntN(4))
		for _, id := range rng.Perm(side.NumBlocks[p] - 1) {
			ids[p] = append(ids[p], id+1)
		}
	}
	inst := &instance{side: side, tab: make([][]int, len(g0.Groups)), scratch: make([][]int, len(g0.Groups))}
	for gi, gg := range g0.Groups {
		n := count[gi]
		if gg.Kind == groups.Recurrent {
			n = 1
			inst.scratch[gi] = append([]int(nil), ids[gg.Pool][1:count[gi]]...)
		}
		inst.tab[gi] = make([]int, first[gi]+n)
		copy(inst.tab[gi][first[gi]:], ids[gg.Pool][:n])
		ids[gg.Pool] = ids[gg.Pool][count[gi]:]
	}
	for _, g := range side.Ranks {
		m := plan.NewRankMemory(g, side.NumBlocks)
		for _, slots := range m.Pools {
			for _, b := range slots {
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
			}
		}
		inst.mems = append(inst.mems, m)
	}
	st, err := refmodel.NewRankStore(side.Ranks, inst.mems, refmodel.SliceTable(inst.tab))
	if err != nil {
		t.Fatalf("rank store: %v", err)
	}
	inst.store = st.WithScratch(refmodel.SliceTable(inst.scratch))
	return inst
}

// sent is what P sends for a handoff at h (kv_transfer_params'
// remote_block_ids): per-token groups the live tail of the blocks covering
// [0, h), recurrent groups the state slot.
func (in *instance) sent(spec *groups.Model, h int) [][]int {
	g0 := in.side.Ranks[0]
	out := make([][]int, len(g0.Groups))
	for gi, gg := range g0.Groups {
		if gg.Kind == groups.Recurrent {
			out[gi] = append([]int(nil), in.tab[gi]...)
			continue
		}
		l := &spec.Layers[gg.Layers[0]]
		n := (h + gg.BlockSize - 1) / gg.BlockSize
		out[gi] = append([]int(nil), in.tab[gi][l.LiveStart(h)/gg.BlockSize:n]...)
	}
	return out
}

// drawMini draws a random transfer model or a preset of any family and
// returns its miniature.
func drawMini(t *rapid.T) *groups.Model {
	m := proptest.GenServingModel().Draw(t, "model")
	mini, err := refmodel.Miniature(m)
	if err != nil {
		t.Fatalf("miniature of %+v: %v", m, err)
	}
	return mini
}

// drawPrompt draws n tokens.
func drawPrompt(t *rapid.T, n int) []uint32 {
	p := make([]uint32, n)
	for i := range p {
		p[i] = uint32(rapid.IntRange(0, refmodel.Vocab-1).Draw(t, "token"))
	}
	return p
}

var smallTPs = []int{1, 2, 4}

// tb is what both *testing.T and *rapid.T offer.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

func hasKind(m *groups.Model, k groups.Kind) bool {
	for i := range m.Layers {
		if m.Layers[i].Kind == k {
			return true
		}
	}
	return false
}

func equalTokens(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
