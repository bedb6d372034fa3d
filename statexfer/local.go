package statexfer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/kernels"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// Local is one rank's cache memory, registered with a transport: a region
// per (pool, slot) of numBlocks pages (per pool, cross-layer), and
// optionally a staging buffer. Engine runs the rank's gathers and
// post-steps. With host staging (MemoryConfig.HostStaging) the cache
// regions live in the engine's memory and are not registered: Regions
// holds the staging buffer only, and peers can read this rank in staged
// mode only.
type Local struct {
	Geo       *groups.Geometry
	NumBlocks []int
	Mem       *plan.RankMemory
	Regions   map[plan.Region]transport.Memory
	Engine    kernels.Engine
	// Kind is the cache memory's kind; HostStaging reports that the cache
	// is not registered (staged reads through host memory only).
	Kind        transport.MemKind
	HostStaging bool

	engineBufs []kernels.Buffer // cache regions allocated by Engine (host staging)
}

// MemoryConfig says where a rank's memory lives and what runs its kernels.
type MemoryConfig struct {
	// Engine runs gathers and post-steps (nil: the CPU engine).
	Engine kernels.Engine
	// Kind is the cache memory's kind (default host). Device memory is
	// registered with the transport when it supports it (UCX with CUDA);
	// otherwise use HostStaging.
	Kind transport.MemKind
	// HostStaging keeps the cache in the engine's memory, unregistered, and
	// moves state through host staging buffers only (host-pinned, what the
	// transport registers): P gathers into its staging buffer (device to
	// host), the transport moves host to host, D scatters from its staging
	// buffer (host to device). For platforms without direct transfers of
	// device memory. It needs a staging buffer.
	HostStaging bool
}

// ErrMemory is returned for unusable memory settings.
var ErrMemory = errors.New("statexfer: bad memory configuration")

// engine is c's engine, or the CPU engine.
func (c MemoryConfig) engine() kernels.Engine {
	if c.Engine == nil {
		return kernels.Default()
	}
	return c.Engine
}

// NewLocal allocates and registers rank memory for g through tr.
func NewLocal(tr transport.Transport, g *groups.Geometry, numBlocks []int, staging int64, mc MemoryConfig) (*Local, error) {
	if err := mc.Kind.Valid(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMemory, err)
	}
	if mc.HostStaging && staging <= 0 {
		return nil, fmt.Errorf("%w: host staging needs a staging buffer", ErrMemory)
	}
	eng := mc.engine()
	l := &Local{Geo: g, NumBlocks: numBlocks, Mem: &plan.RankMemory{Pools: make([][][]byte, len(g.Pools))},
		Regions: map[plan.Region]transport.Memory{}, Engine: eng, Kind: mc.Kind, HostStaging: mc.HostStaging}
	register := func(r plan.Region, n int64, kind transport.MemKind) (transport.Memory, error) {
		m, err := tr.Alloc(int(n), kind)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("register %s (%d bytes of %s memory): %w", r, n, kind, err)
		}
		l.Regions[r] = m
		return m, nil
	}
	cache := func(r plan.Region, n int64) ([]byte, error) {
		if mc.HostStaging {
			// Engine memory, not registered.
			if _, cpu := eng.(*kernels.CPU); cpu && !mc.Kind.IsHost() {
				l.Close()
				return nil, fmt.Errorf("%w: %s cache memory needs a device engine, the engine is %s", ErrMemory, mc.Kind, eng.Name())
			}
			b, err := eng.Alloc(n)
			if err != nil {
				l.Close()
				return nil, fmt.Errorf("allocate %s (%d bytes) with engine %s: %w", r, n, eng.Name(), err)
			}
			l.engineBufs = append(l.engineBufs, b)
			if cb, ok := b.(*kernels.CPUBuffer); ok {
				return cb.Bytes(), nil
			}
			l.Mem.Bufs[r] = b
			return nil, nil
		}
		m, err := register(r, n, mc.Kind)
		if err != nil {
			return nil, err
		}
		if m.Bytes() == nil {
			l.Close()
			return nil, fmt.Errorf("%w: %s: %s memory registered by %s has no host view, and running engine %s on transport-registered device memory is not built: use host staging", ErrMemory, r, mc.Kind, tr.Name(), eng.Name())
		}
		return m.Bytes(), nil
	}
	if mc.HostStaging {
		l.Mem.Bufs = map[plan.Region]kernels.Buffer{}
	}
	for p, pg := range g.Pools {
		l.Mem.Pools[p] = make([][]byte, pg.Regions())
		for s := 0; s < pg.Regions(); s++ {
			b, err := cache(plan.Region{Pool: p, Slot: s}, int64(numBlocks[p])*int64(pg.BlockStride()))
			if err != nil {
				return nil, err
			}
			l.Mem.Pools[p][s] = b
		}
	}
	if staging > 0 {
		kind := transport.HostMemory
		if mc.HostStaging {
			kind = transport.PinnedMemory
		}
		m, err := register(plan.Staging, staging, kind)
		if err != nil {
			return nil, err
		}
		l.Mem.Staging = m.Bytes()
	}
	return l, nil
}

// Len is the size of a local region (0 when absent).
func (l *Local) Len(r plan.Region) int64 {
	if m, ok := l.Regions[r]; ok {
		return int64(transport.MemLen(m))
	}
	if r.Pool >= 0 && r.Pool < len(l.Geo.Pools) && r.Slot >= 0 && r.Slot < l.Geo.Pools[r.Pool].Regions() {
		if b := l.Mem.Region(r); b != nil {
			return int64(len(b))
		}
		if b, ok := l.Mem.Bufs[r]; ok {
			return b.Len()
		}
	}
	return 0
}

// Direct reports whether peers can read this rank's cache directly (it is
// registered: no host staging).
func (l *Local) Direct() bool { return !l.HostStaging }

// Meta describes this rank for the handshake. With host staging the cache
// regions are described without a key: peers learn their sizes and kinds
// and can read the staging buffer only.
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
			r := plan.Region{Pool: p, Slot: s}
			rm := RegionMeta{Pool: p, Slot: s, Stride: int64(pg.BlockStride()), NumBlocks: l.NumBlocks[p], Kind: l.Kind}
			if mem, ok := l.Regions[r]; ok {
				d := mem.Desc()
				rm.Addr, rm.Len, rm.Key, rm.Kind = d.Addr, d.Len, d.Key, d.Kind
			} else {
				rm.Len = uint64(l.Len(r))
			}
			m.Regions = append(m.Regions, rm)
		}
	}
	if st, ok := l.Regions[plan.Staging]; ok {
		d := st.Desc()
		m.Regions = append(m.Regions, RegionMeta{Pool: plan.StagingPool, Addr: d.Addr, Len: d.Len, Key: d.Key, Kind: d.Kind})
	}
	return m
}

// Close releases every region.
func (l *Local) Close() {
	l.Mem.Unmap()
	for _, m := range l.Regions {
		m.Close()
	}
	l.Regions = nil
	for _, b := range l.engineBufs {
		b.Free()
	}
	l.engineBufs = nil
}

// Remote is a P rank as D sees it after the handshake.
type Remote struct {
	Meta RankMeta
	Peer transport.Peer
	regs map[plan.Region]transport.RemoteMemory
	// noDirect says why the rank's cache cannot be read directly ("" when
	// it can).
	noDirect string
}

// Direct reports whether D can read the rank's cache directly, and if not
// why (it stages through host memory, or its cache is memory this side's
// transport cannot read).
func (r *Remote) Direct() (bool, string) { return r.noDirect == "", r.noDirect }

// Import connects to the rank described by meta and imports its regions.
func Import(ctx context.Context, tr transport.Transport, meta RankMeta) (*Remote, error) {
	p, err := tr.Connect(ctx, meta.Address)
	if err != nil {
		return nil, fmt.Errorf("connect to prefill rank %d: %w", meta.Rank, err)
	}
	r := &Remote{Meta: meta, Peer: p, regs: map[plan.Region]transport.RemoteMemory{}}
	_, r.noDirect = meta.Direct()
	for _, rg := range meta.Regions {
		if !rg.Registered() {
			continue // host staging: only the staging buffer is readable
		}
		if err := tr.Supports(rg.Kind); err != nil && rg.Pool != plan.StagingPool {
			// A cache this transport cannot read (device memory without
			// device support here): staged reads only.
			if r.noDirect == "" {
				r.noDirect = fmt.Sprintf("prefill rank %d's cache is %s memory and this side cannot read it: %v", meta.Rank, rg.Kind, err)
			}
			continue
		}
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
