package hma

import (
	"fmt"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/specdec"
)

// ConfigFromGeometry derives an allocator Config from one rank's geometry
// (every rank of an instance has the same groups and block sizes): one
// GroupSpec per KV cache group with its kind, block size, window or chunk,
// Eagle flag and pool, and numBlocks[p] blocks in pool p.
func ConfigFromGeometry(g *groups.Geometry, numBlocks []int, mode RecurrentMode, caching bool) (Config, error) {
	if len(numBlocks) != len(g.Pools) {
		return Config{}, fmt.Errorf("%w: %d pool sizes for %d pools", ErrInvalidConfig, len(numBlocks), len(g.Pools))
	}
	c := Config{RecurrentMode: mode, NumSpeculativeTokens: specdec.ScratchBlocks(g.Model), EnableCaching: caching}
	for _, n := range numBlocks {
		c.Pools = append(c.Pools, PoolSpec{NumBlocks: n})
	}
	for _, gg := range g.Groups {
		gs := GroupSpec{Kind: gg.Kind, BlockSize: gg.BlockSize, Eagle: gg.Eagle, Pool: gg.Pool}
		if a := g.Model.Layers[gg.Layers[0]].Attention; a != nil {
			gs.Window, gs.Chunk = a.Window, a.Chunk
		}
		c.Groups = append(c.Groups, gs)
	}
	return c, c.Validate()
}
