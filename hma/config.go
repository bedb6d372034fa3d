package hma

import (
	"fmt"

	"github.com/hybridxfer/hybridxfer/groups"
)

// RecurrentMode selects how recurrent (Mamba, GDN, KDA, ...) groups keep their
// state blocks.
//
//go:generate go tool stringer -type=RecurrentMode -linecomment
type RecurrentMode uint8

const (
	// RecurrentNone: one state block per request, updated in place; no prefix
	// reuse for recurrent groups (a prefix hit of a model with such a group is
	// always 0).
	RecurrentNone RecurrentMode = iota // none
	// RecurrentAlign: the state moves to a new block at each block boundary; a
	// state that a step ended exactly on is kept in the prefix cache after the
	// request moves on, so prefixes can be reused at those boundaries.
	RecurrentAlign // align
	// RecurrentAll: a state per block (the kernel writes the state at every
	// block boundary); all of them are kept while the request lives.
	RecurrentAll // all
)

// GroupSpec describes one group: layers that share one block table.
type GroupSpec struct {
	Kind groups.Kind
	// BlockSize is the number of tokens per block. For recurrent groups in
	// RecurrentNone it may be any value: each request holds one state block.
	BlockSize int
	Window    int  // SlidingWindow only: tokens the window covers, W >= 1
	Chunk     int  // ChunkedLocal only: chunk length C >= 1
	Eagle     bool // the group holds Eagle/MTP draft layers: a prefix hit drops its last block
	Pool      int  // index into Config.Pools
}

// PoolSpec describes one block pool.
type PoolSpec struct {
	NumBlocks int // including the null block 0
}

// Config is the allocator's configuration. One pool used by every group is the
// unified layout (vLLM); several pools, each named by the groups that use it,
// is the separate layout (SGLang). Block ids are per pool; each pool has its
// own null block 0.
type Config struct {
	Groups               []GroupSpec
	Pools                []PoolSpec
	RecurrentMode        RecurrentMode
	NumSpeculativeTokens int  // spec scratch blocks per recurrent group and request
	EnableCaching        bool // prefix caching
}

// Layout names the memory layout of a Config.
type Layout uint8

const (
	Unified  Layout = iota // one pool for every group
	Separate               // several pools
)

func (l Layout) String() string {
	if l == Unified {
		return "unified"
	}
	return "separate"
}

// Layout reports Unified when every group uses one pool.
func (c *Config) Layout() Layout {
	if len(c.Pools) == 1 {
		return Unified
	}
	return Separate
}

// maxBlocks bounds NumBlocks so that ids fit the int32 links of the free list.
const maxBlocks = 1<<31 - 1

func cfgErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Validate reports the first inconsistency of c as a *ConfigError.
func (c *Config) Validate() error {
	if len(c.Groups) == 0 {
		return cfgErr("Groups", "at least one group is required")
	}
	if len(c.Pools) == 0 {
		return cfgErr("Pools", "at least one pool is required")
	}
	switch c.RecurrentMode {
	case RecurrentNone, RecurrentAlign, RecurrentAll:
	default:
		return cfgErr("RecurrentMode", "unknown mode %d", c.RecurrentMode)
	}
	if c.NumSpeculativeTokens < 0 {
		return cfgErr("NumSpeculativeTokens", "must be >= 0, got %d", c.NumSpeculativeTokens)
	}
	for i, p := range c.Pools {
		if p.NumBlocks < 2 || p.NumBlocks > maxBlocks {
			return cfgErr(fmt.Sprintf("Pools[%d].NumBlocks", i),
				"must be in [2, %d] (the null block plus at least one), got %d", maxBlocks, p.NumBlocks)
		}
	}
	used := make([]bool, len(c.Pools))
	for i, g := range c.Groups {
		f := func(name string) string { return fmt.Sprintf("Groups[%d].%s", i, name) }
		if g.Pool < 0 || g.Pool >= len(c.Pools) {
			return cfgErr(f("Pool"), "no pool %d (have %d)", g.Pool, len(c.Pools))
		}
		used[g.Pool] = true
		switch {
		case g.Kind == groups.Recurrent:
			if c.RecurrentMode != RecurrentNone && g.BlockSize < 1 {
				return cfgErr(f("BlockSize"), "must be >= 1 in recurrent mode %s, got %d", c.RecurrentMode, g.BlockSize)
			}
			if g.Eagle {
				return cfgErr(f("Eagle"), "draft layers are attention layers, not recurrent")
			}
		case g.Kind.PerToken():
			if g.BlockSize < 1 {
				return cfgErr(f("BlockSize"), "must be >= 1, got %d", g.BlockSize)
			}
		default:
			return cfgErr(f("Kind"), "unsupported kind %v", g.Kind)
		}
		if g.Kind == groups.SlidingWindow {
			if g.Window < 1 {
				return cfgErr(f("Window"), "must be >= 1, got %d", g.Window)
			}
		} else if g.Window != 0 {
			return cfgErr(f("Window"), "only for sliding-window groups")
		}
		if g.Kind == groups.ChunkedLocal {
			if g.Chunk < 1 {
				return cfgErr(f("Chunk"), "must be >= 1, got %d", g.Chunk)
			}
		} else if g.Chunk != 0 {
			return cfgErr(f("Chunk"), "only for chunked-local groups")
		}
	}
	for i, u := range used {
		if !u {
			return cfgErr(fmt.Sprintf("Pools[%d]", i), "no group uses this pool")
		}
	}
	if _, err := c.alignment(); err != nil {
		return err
	}
	return nil
}

// alignment is the lcm of the block sizes of the groups that take part in
// prefix hits (every group but recurrent groups in RecurrentNone).
func (c *Config) alignment() (int, error) {
	l := 1
	for i, g := range c.Groups {
		if g.Kind == groups.Recurrent && c.RecurrentMode == RecurrentNone {
			continue
		}
		d := gcd(l, g.BlockSize)
		if l/d > (1<<40)/g.BlockSize {
			return 0, cfgErr(fmt.Sprintf("Groups[%d].BlockSize", i), "lcm of block sizes overflows")
		}
		l = l / d * g.BlockSize
	}
	return l, nil
}

// Alignment returns the lcm of the block sizes of the groups that take part in
// prefix hits: every prefix hit is a multiple of it.
func (c *Config) Alignment() int {
	l, err := c.alignment()
	if err != nil {
		return 0
	}
	return l
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func cdiv(a, b int) int { return (a + b - 1) / b }

// SkippedTokens is the number of leading tokens of n computed tokens whose
// state group g no longer needs: groups.SkippedTokens of its kind (full
// attention, MLA and indexer 0; sliding window W max(0, n-W+1); chunked
// local C floor(n/C)*C; recurrent n-1, only the newest state).
func (g *GroupSpec) SkippedTokens(n int) int {
	return groups.SkippedTokens(g.Kind, g.Window, g.Chunk, n)
}

// ParseRecurrentMode parses a mode's name (none, align or all; vLLM's
// mamba_cache_mode values).
func ParseRecurrentMode(s string) (RecurrentMode, error) {
	for _, m := range []RecurrentMode{RecurrentNone, RecurrentAlign, RecurrentAll} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("%w: recurrent (mamba cache) mode %q: want none, align or all", ErrInvalidArgument, s)
}
