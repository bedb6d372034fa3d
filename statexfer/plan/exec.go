package plan

import (
	"fmt"
	"sync"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/kernels"
)

// RankMemory is one rank's cache memory: per pool, per region (a layer
// slot, or the whole pool cross-layer), NumBlocks blocks of the pool's
// BlockStride bytes; plus a staging buffer. Pools and Staging are the host
// views as Go byte slices; a region without one (nil: device memory) has
// an engine buffer in Bufs. It is what the executor moves bytes between,
// through a kernels.Engine.
type RankMemory struct {
	Pools   [][][]byte
	Staging []byte
	// Bufs holds the regions that live in an engine's memory without a
	// host view (device caches), by region.
	Bufs map[Region]kernels.Buffer

	mu     sync.Mutex
	mapped map[Region]mappedBuf // host regions mapped into a non-CPU engine
}

// mappedBuf is a host region mapped into an engine (kernels.HostMapper),
// valid while the region's bytes are the same.
type mappedBuf struct {
	base *byte
	n    int
	buf  kernels.Buffer
}

// NewRankMemory allocates rank memory for g with numBlocks blocks per pool.
func NewRankMemory(g *groups.Geometry, numBlocks []int) *RankMemory {
	m := &RankMemory{Pools: make([][][]byte, len(g.Pools))}
	for p, pg := range g.Pools {
		m.Pools[p] = make([][]byte, pg.Regions())
		for s := range m.Pools[p] {
			m.Pools[p][s] = make([]byte, numBlocks[p]*pg.BlockStride())
		}
	}
	return m
}

// Region returns the host bytes of r (nil when r has no host view).
func (m *RankMemory) Region(r Region) []byte {
	if r.Pool == StagingPool {
		return m.Staging
	}
	return m.Pools[r.Pool][r.Slot]
}

// EnsureStaging grows the staging buffer to at least n bytes.
func (m *RankMemory) EnsureStaging(n int64) {
	if int64(len(m.Staging)) < n {
		m.Staging = make([]byte, n)
	}
}

// Shadow returns m as host memory for code that reads and writes bytes
// (pattern fills, checks): m itself when every region has a host view,
// else a copy whose engine regions (Bufs) are downloaded into host bytes;
// Store writes such a copy back.
func (m *RankMemory) Shadow() (*RankMemory, error) {
	if len(m.Bufs) == 0 {
		return m, nil
	}
	sh := &RankMemory{Pools: make([][][]byte, len(m.Pools)), Staging: m.Staging}
	for p := range m.Pools {
		sh.Pools[p] = make([][]byte, len(m.Pools[p]))
		for s, b := range m.Pools[p] {
			r := Region{Pool: p, Slot: s}
			if buf, ok := m.Bufs[r]; ok {
				b = make([]byte, buf.Len())
				if err := buf.Download(0, b); err != nil {
					return nil, fmt.Errorf("download %s: %w", r, err)
				}
			}
			sh.Pools[p][s] = b
		}
	}
	return sh, nil
}

// Store writes the engine regions of a Shadow of m back into m.
func (m *RankMemory) Store(sh *RankMemory) error {
	if sh == m {
		return nil
	}
	for r, buf := range m.Bufs {
		if r.Pool == StagingPool {
			continue
		}
		if err := buf.Upload(0, sh.Pools[r.Pool][r.Slot]); err != nil {
			return fmt.Errorf("upload %s: %w", r, err)
		}
	}
	return nil
}

// buffer returns region r as a buffer of e: its engine buffer, or its host
// bytes mapped into e (once per region and backing array).
func (m *RankMemory) buffer(e kernels.Engine, r Region) (kernels.Buffer, error) {
	if b, ok := m.Bufs[r]; ok {
		return b, nil
	}
	host := m.Region(r)
	if len(host) == 0 {
		return nil, fmt.Errorf("%w: region %s has no memory", ErrBadRequest, r)
	}
	hm, ok := e.(kernels.HostMapper)
	if !ok {
		return nil, fmt.Errorf("%w: region %s is host memory and engine %s cannot use host memory", ErrBadRequest, r, e.Name())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if mb, ok := m.mapped[r]; ok {
		if mb.base == &host[0] && mb.n == len(host) {
			return mb.buf, nil
		}
		mb.buf.Free() // the region was reallocated (EnsureStaging)
		delete(m.mapped, r)
	}
	b, err := hm.MapHost(host)
	if err != nil {
		return nil, fmt.Errorf("map region %s into engine %s: %w", r, e.Name(), err)
	}
	if m.mapped == nil {
		m.mapped = map[Region]mappedBuf{}
	}
	m.mapped[r] = mappedBuf{base: &host[0], n: len(host), buf: b}
	return b, nil
}

// Unmap forgets the host regions mapped into an engine (call before the
// memory is released).
func (m *RankMemory) Unmap() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, mb := range m.mapped {
		mb.buf.Free()
	}
	m.mapped = nil
}

// kernel runs copy ops (or, with t set, one transpose) from region sr of
// sm to region dr of dm with e: on the host views directly when both have
// one and e runs host kernels (the CPU engine), else on e's buffers.
// queued reports whether e may still be running it (Sync before use).
func kernel(e kernels.Engine, dm *RankMemory, dr Region, sm *RankMemory, sr Region, ops []kernels.CopyOp, t *kernels.Transpose) (queued bool, err error) {
	if hk, ok := e.(kernels.HostKernels); ok {
		if d, s := dm.Region(dr), sm.Region(sr); d != nil && s != nil { // regions in Bufs have no host view
			if t != nil {
				return false, hk.TransposeHost(d, s, *t)
			}
			return false, hk.CopyHost(d, s, ops)
		}
	}
	d, err := dm.buffer(e, dr)
	if err != nil {
		return false, err
	}
	s, err := sm.buffer(e, sr)
	if err != nil {
		return false, err
	}
	if t != nil {
		return true, e.Transpose(d, s, *t)
	}
	return true, e.Copy(d, s, ops)
}

// Execute runs plan p in process with engine e: P ranks' gathers on pMem,
// the reads from pMem into dMem, then D's post steps.
func Execute(e kernels.Engine, p *Plan, pMem []*RankMemory, dMem *RankMemory) error {
	dMem.EnsureStaging(p.ScratchBytes)
	for i := range p.Remotes {
		rp := &p.Remotes[i]
		if rp.Rank < 0 || rp.Rank >= len(pMem) {
			return fmt.Errorf("%w: prefill rank %d not present", ErrBadRequest, rp.Rank)
		}
		src := pMem[rp.Rank]
		src.EnsureStaging(rp.StagingBytes)
		if err := RunSteps(e, src, rp.Gather); err != nil {
			return fmt.Errorf("gather on prefill rank %d: %w", rp.Rank, err)
		}
		if err := runReads(e, src, dMem, rp.Reads); err != nil {
			return fmt.Errorf("reads from prefill rank %d: %w", rp.Rank, err)
		}
	}
	if err := RunSteps(e, dMem, p.Post); err != nil {
		return fmt.Errorf("post-processing on decode rank %d: %w", p.DRank, err)
	}
	return nil
}

// runReads copies reads from one rank's memory to another's, batching
// consecutive reads between the same two regions into one kernel call.
func runReads(e kernels.Engine, src, dst *RankMemory, rs []Read) error {
	var ops []kernels.CopyOp
	queued := false
	for i := 0; i < len(rs); {
		j := i
		ops = ops[:0]
		for ; j < len(rs) && rs[j].Remote == rs[i].Remote && rs[j].Local == rs[i].Local; j++ {
			ops = append(ops, kernels.CopyOp{Dst: rs[j].LocalOff, Src: rs[j].RemoteOff, Len: rs[j].Len})
		}
		q, err := kernel(e, dst, rs[i].Local, src, rs[i].Remote, ops, nil)
		if err != nil {
			return err
		}
		queued = queued || q
		i = j
	}
	if queued {
		return e.Sync()
	}
	return nil
}

// RunSteps runs local steps in order on one rank's memory with engine e,
// and waits for them (Sync) when e ran any asynchronously: the steps'
// results are in memory when it returns.
func RunSteps(e kernels.Engine, m *RankMemory, steps []Step) error {
	var ops []kernels.CopyOp
	queued := false
	for i := 0; i < len(steps); {
		s := steps[i]
		if s.Kind == StepTranspose {
			t := kernels.Transpose{Batches: 1, Rows: s.Rows, Cols: s.Cols, ItemBytes: s.ItemBytes, SrcOff: s.SrcOff, DstOff: s.DstOff}
			q, err := kernel(e, m, s.Dst, m, s.Src, nil, &t)
			if err != nil {
				return err
			}
			queued = queued || q
			i++
			continue
		}
		j := i
		ops = ops[:0]
		for ; j < len(steps) && steps[j].Kind == StepCopy && steps[j].Src == s.Src && steps[j].Dst == s.Dst; j++ {
			ops = append(ops, kernels.CopyOp{Dst: steps[j].DstOff, Src: steps[j].SrcOff, Len: steps[j].Len})
		}
		q, err := kernel(e, m, s.Dst, m, s.Src, ops, nil)
		if err != nil {
			return err
		}
		queued = queued || q
		i = j
	}
	if queued {
		return e.Sync()
	}
	return nil
}
