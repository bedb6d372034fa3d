package plan

import (
	"math/rand/v2"

	"github.com/hybridxfer/hybridxfer/groups"
)

// Synthetic builds a planner and one request of tokens computed positions
// (D computes the next one) for benchmarks and the reads table: each side's
// pools hold exactly the request's blocks, handed out in a seeded random
// order (worst-case fragmentation: neighbouring positions rarely sit in
// neighbouring blocks). hit is D's prefix hit in tokens.
func Synthetic(m *groups.Model, pc, dc groups.InstanceConfig, tokens, hit int, seed uint64) (*Planner, *Request, error) {
	rng := rand.New(rand.NewPCG(seed, 1))
	return synthetic(m, pc, dc, tokens, hit, rng.Perm)
}

// SyntheticInOrder is Synthetic with block ids handed out in order (a fresh
// allocator: each group's blocks consecutive, no fragmentation).
func SyntheticInOrder(m *groups.Model, pc, dc groups.InstanceConfig, tokens, hit int) (*Planner, *Request, error) {
	return synthetic(m, pc, dc, tokens, hit, func(n int) []int {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out
	})
}

func synthetic(m *groups.Model, pc, dc groups.InstanceConfig, tokens, hit int, perm func(int) []int) (*Planner, *Request, error) {
	pg, err := groups.NewGeometry(m, pc, 0)
	if err != nil {
		return nil, nil, err
	}
	dg, err := groups.NewGeometry(m, dc, 0)
	if err != nil {
		return nil, nil, err
	}
	ng := len(pg.Groups)
	req := &Request{Tokens: tokens, DHit: hit, PBlocks: make([][]int, ng), DBlocks: make([][]int, ng)}
	need := func(g *groups.Geometry, gi, n int) (first, count int) {
		gg := &g.Groups[gi]
		if gg.Kind == groups.Recurrent {
			return 0, 1
		}
		l := &m.Layers[gg.Layers[0]]
		nb := (n + gg.BlockSize - 1) / gg.BlockSize
		f := l.LiveStart(tokens) / gg.BlockSize
		return f, nb - f
	}
	pUsed, dUsed := make([]int, len(pg.Pools)), make([]int, len(dg.Pools))
	for gi := 0; gi < ng; gi++ {
		_, c := need(pg, gi, tokens)
		pUsed[pg.Groups[gi].Pool] += c
		_, c = need(dg, gi, tokens+1)
		dUsed[dg.Groups[gi].Pool] += c
	}
	perms := func(used []int) [][]int {
		out := make([][]int, len(used))
		for p, n := range used {
			out[p] = perm(n)
		}
		return out
	}
	pPerm, dPerm := perms(pUsed), perms(dUsed)
	pNext, dNext := make([]int, len(pUsed)), make([]int, len(dUsed))
	for gi := 0; gi < ng; gi++ {
		_, c := need(pg, gi, tokens)
		pool := pg.Groups[gi].Pool
		for i := 0; i < c; i++ {
			req.PBlocks[gi] = append(req.PBlocks[gi], 1+pPerm[pool][pNext[pool]])
			pNext[pool]++
		}
		f, c := need(dg, gi, tokens+1)
		pool = dg.Groups[gi].Pool
		if dg.Groups[gi].Kind != groups.Recurrent {
			req.DBlocks[gi] = make([]int, f, f+c)
		}
		for i := 0; i < c; i++ {
			req.DBlocks[gi] = append(req.DBlocks[gi], 1+dPerm[pool][dNext[pool]])
			dNext[pool]++
		}
	}
	ps, err := NewSide(m, pc, func(p int, _ *groups.Geometry) int { return pUsed[p] + 1 })
	if err != nil {
		return nil, nil, err
	}
	ds, err := NewSide(m, dc, func(p int, _ *groups.Geometry) int { return dUsed[p] + 1 })
	if err != nil {
		return nil, nil, err
	}
	pl, err := New(ps, ds)
	return pl, req, err
}
