package plan

import (
	"fmt"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/kernels"
)

// RankMemory is one rank's cache memory as Go byte slices: per pool, per
// region (a layer slot, or the whole pool cross-layer), NumBlocks blocks of
// the pool's BlockStride bytes; plus a staging buffer. It is what the
// in-process executor moves bytes between.
type RankMemory struct {
	Pools   [][][]byte
	Staging []byte
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

// Region returns the bytes of r.
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

// Execute runs plan p in process: P ranks' gathers on pMem, the reads from
// pMem into dMem, then D's post steps, with the CPU kernels.
func Execute(p *Plan, pMem []*RankMemory, dMem *RankMemory) error {
	dMem.EnsureStaging(p.ScratchBytes)
	for i := range p.Remotes {
		rp := &p.Remotes[i]
		if rp.Rank < 0 || rp.Rank >= len(pMem) {
			return fmt.Errorf("%w: prefill rank %d not present", ErrBadRequest, rp.Rank)
		}
		src := pMem[rp.Rank]
		src.EnsureStaging(rp.StagingBytes)
		if err := RunSteps(src, rp.Gather); err != nil {
			return fmt.Errorf("gather on prefill rank %d: %w", rp.Rank, err)
		}
		if err := runReads(src, dMem, rp.Reads); err != nil {
			return fmt.Errorf("reads from prefill rank %d: %w", rp.Rank, err)
		}
	}
	if err := RunSteps(dMem, p.Post); err != nil {
		return fmt.Errorf("post-processing on decode rank %d: %w", p.DRank, err)
	}
	return nil
}

// runReads copies reads from one rank's memory to another's, batching
// consecutive reads between the same two regions into one kernel call.
func runReads(src, dst *RankMemory, rs []Read) error {
	var ops []kernels.CopyOp
	for i := 0; i < len(rs); {
		j := i
		ops = ops[:0]
		for ; j < len(rs) && rs[j].Remote == rs[i].Remote && rs[j].Local == rs[i].Local; j++ {
			ops = append(ops, kernels.CopyOp{Dst: rs[j].LocalOff, Src: rs[j].RemoteOff, Len: rs[j].Len})
		}
		if err := kernels.Copy(dst.Region(rs[i].Local), src.Region(rs[i].Remote), ops); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// RunSteps runs local steps in order on one rank's memory.
func RunSteps(m *RankMemory, steps []Step) error {
	var ops []kernels.CopyOp
	for i := 0; i < len(steps); {
		s := steps[i]
		if s.Kind == StepTranspose {
			t := kernels.Transpose{Batches: 1, Rows: s.Rows, Cols: s.Cols, ItemBytes: s.ItemBytes, SrcOff: s.SrcOff, DstOff: s.DstOff}
			if err := kernels.RunTranspose(m.Region(s.Dst), m.Region(s.Src), t); err != nil {
				return err
			}
			i++
			continue
		}
		j := i
		ops = ops[:0]
		for ; j < len(steps) && steps[j].Kind == StepCopy && steps[j].Src == s.Src && steps[j].Dst == s.Dst; j++ {
			ops = append(ops, kernels.CopyOp{Dst: steps[j].DstOff, Src: steps[j].SrcOff, Len: steps[j].Len})
		}
		if err := kernels.Copy(m.Region(s.Dst), m.Region(s.Src), ops); err != nil {
			return err
		}
		i = j
	}
	return nil
}
