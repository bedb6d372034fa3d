package statexfer

import (
	"context"
	"fmt"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// Local is one rank's cache memory, registered with a transport: a region
// per (pool, slot) of numBlocks pages (per pool, cross-layer), and
// optionally a staging buffer.
type Local struct {
	Geo       *groups.Geometry
	NumBlocks []int
	Mem       *plan.RankMemory
	Regions   map[plan.Region]transport.Memory
}

// NewLocal allocates and registers rank memory for g through tr.
func NewLocal(tr transport.Transport, g *groups.Geometry, numBlocks []int, staging int64) (*Local, error) {
	l := &Local{Geo: g, NumBlocks: numBlocks, Mem: &plan.RankMemory{Pools: make([][][]byte, len(g.Pools))}, Regions: map[plan.Region]transport.Memory{}}
	alloc := func(r plan.Region, n int64) ([]byte, error) {
		m, err := tr.Alloc(int(n))
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("register %s (%d bytes): %w", r, n, err)
		}
		l.Regions[r] = m
		return m.Bytes(), nil
	}
	for p, pg := range g.Pools {
		l.Mem.Pools[p] = make([][]byte, pg.Regions())
		for s := 0; s < pg.Regions(); s++ {
			b, err := alloc(plan.Region{Pool: p, Slot: s}, int64(numBlocks[p])*int64(pg.BlockStride()))
			if err != nil {
				return nil, err
			}
			l.Mem.Pools[p][s] = b
		}
	}
	if staging > 0 {
		b, err := alloc(plan.Staging, staging)
		if err != nil {
			return nil, err
		}
		l.Mem.Staging = b
	}
	return l, nil
}

// Len is the size of a local region (0 when absent).
func (l *Local) Len(r plan.Region) int64 {
	if m, ok := l.Regions[r]; ok {
		return int64(len(m.Bytes()))
	}
	return 0
}

// Meta describes this rank for the handshake.
func (l *Local) Meta(engineID string, dp int, addr []byte, now time.Time) RankMeta {
	m := RankMeta{Version: MetadataVersion, EngineID: engineID, DPIndex: dp, TP: l.Geo.Config.TP, Rank: l.Geo.Rank,
		Address: addr, Config: l.Geo.Config, Timestamp: now.UnixNano()}
	for _, gg := range l.Geo.Groups {
		gm := GroupMeta{BlockSize: gg.BlockSize, PageBytes: gg.PageBytes, Pool: gg.Pool}
		if gg.Kind == groups.Recurrent {
			s := l.Geo.Shapes[gg.Layers[0]]
			gm.ConvBytes, gm.StateSize = s.ConvBytes, s.StateBytes
		}
		m.Groups = append(m.Groups, gm)
	}
	for p, pg := range l.Geo.Pools {
		for s := 0; s < pg.Regions(); s++ {
			d := l.Regions[plan.Region{Pool: p, Slot: s}].Desc()
			m.Regions = append(m.Regions, RegionMeta{Pool: p, Slot: s, Addr: d.Addr, Len: d.Len, Key: d.Key, Stride: int64(pg.BlockStride()), NumBlocks: l.NumBlocks[p]})
		}
	}
	if st, ok := l.Regions[plan.Staging]; ok {
		d := st.Desc()
		m.Regions = append(m.Regions, RegionMeta{Pool: plan.StagingPool, Addr: d.Addr, Len: d.Len, Key: d.Key})
	}
	return m
}

// Close releases every region.
func (l *Local) Close() {
	for _, m := range l.Regions {
		m.Close()
	}
	l.Regions = nil
}

// Remote is a P rank as D sees it after the handshake.
type Remote struct {
	Meta RankMeta
	Peer transport.Peer
	regs map[plan.Region]transport.RemoteMemory
}

// Import connects to the rank described by meta and imports its regions.
func Import(ctx context.Context, tr transport.Transport, meta RankMeta) (*Remote, error) {
	p, err := tr.Connect(ctx, meta.Address)
	if err != nil {
		return nil, fmt.Errorf("connect to prefill rank %d: %w", meta.Rank, err)
	}
	r := &Remote{Meta: meta, Peer: p, regs: map[plan.Region]transport.RemoteMemory{}}
	for _, rg := range meta.Regions {
		rm, err := p.Import(rg.Desc())
		if err != nil {
			return nil, fmt.Errorf("import prefill rank %d region %d/%d: %w", meta.Rank, rg.Pool, rg.Slot, err)
		}
		reg := plan.Region{Pool: rg.Pool, Slot: rg.Slot}
		if rg.Pool == plan.StagingPool {
			reg = plan.Staging
		}
		r.regs[reg] = rm
	}
	return r, nil
}

// ReadCostNs is the fixed cost of one read from any of the rank's regions
// (the largest), where its peer reports it for every region
// (transport.ReadCoster); ok false otherwise.
func (r *Remote) ReadCostNs() (float64, bool) {
	rc, ok := r.Peer.(transport.ReadCoster)
	if !ok || len(r.regs) == 0 {
		return 0, false
	}
	var worst float64
	for _, m := range r.regs {
		ns, ok := rc.ReadCostNs(m)
		if !ok {
			return 0, false
		}
		worst = max(worst, ns)
	}
	return worst, true
}

// CostFor is base with the per-read cost the remotes' peers report
// (Remote.ReadCostNs, the largest of them), or base unchanged when any
// remote cannot say: Auto mode then weighs staging against the reads of
// the path they really take (on the UCX mapped path a read costs tens of
// nanoseconds, and staging, three copies of every byte, loses).
func CostFor(base plan.CostModel, remotes []*Remote) plan.CostModel {
	var worst float64
	for _, r := range remotes {
		if r == nil {
			continue
		}
		ns, ok := r.ReadCostNs()
		if !ok {
			return base
		}
		worst = max(worst, ns)
	}
	if worst > 0 {
		base.PerReadNs = worst
	}
	return base
}

// Region returns an imported region of the remote rank (nil when absent).
func (r *Remote) Region(reg plan.Region) transport.RemoteMemory { return r.regs[reg] }
