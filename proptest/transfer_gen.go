package proptest

import (
	"fmt"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/verify"
	"pgregory.net/rapid"
)

// TransferCase is one randomized P -> D transfer setting.
type TransferCase struct {
	Model        *groups.Model
	P, D         groups.InstanceConfig
	PromptTokens int
	Requests     int
	Seed         uint64
	Mode         plan.Mode
}

func (c TransferCase) String() string {
	return fmt.Sprintf("%s P%+v D%+v tokens<=%d requests=%d seed=%d mode=%s", c.Model.Name, c.P, c.D, c.PromptTokens, c.Requests, c.Seed, c.Mode)
}

// tps are the tensor-parallel sizes drawn; every unit count the generator
// draws for sharded (non-replicable) state is a multiple of maxTP.
var tps = []int{1, 2, 4, 8}

const maxTP = 8

// GenTransferModel draws small hybrid models that every tp in {1,2,4,8}
// can shard: every layer kind (full, sliding, chunked, MLA plain and
// fp8_ds_mla, indexer, recurrent of every type with several conv segments
// and states, replicable Mamba2-style groups), fp8 scales, head_dim_v,
// every dtype, speculative tokens, draft layers and parallel layers
// (Falcon-H1: two caches in one decoder layer). Dimensions are tiny so
// full byte-level checks stay cheap.
func GenTransferModel() *rapid.Generator[*groups.Model] {
	return rapid.Custom(func(t *rapid.T) *groups.Model {
		nspec := rapid.IntRange(1, 3).Draw(t, "specs")
		var specs []groups.Layer
		for i := 0; i < nspec; i++ {
			specs = append(specs, genSmallLayer(t))
		}
		m := &groups.Model{Name: "random", NumSpeculativeTokens: rapid.IntRange(0, 2).Draw(t, "nspec")}
		n := rapid.IntRange(1, 10).Draw(t, "layers")
		for i := 0; i < n; i++ {
			l := cloneLayer(specs[rapid.IntRange(0, nspec-1).Draw(t, "spec")])
			l.Name = fmt.Sprintf("layers.%d", i)
			l.Parallel = i > 0 && rapid.IntRange(0, 4).Draw(t, "parallel") == 0
			m.Layers = append(m.Layers, l)
		}
		if rapid.IntRange(0, 3).Draw(t, "draft") == 0 {
			for i, s := range specs {
				if s.Kind != groups.Recurrent {
					l := cloneLayer(specs[i])
					l.Name, l.Draft = "mtp.0", true
					m.Layers = append(m.Layers, l)
					m.Draft = groups.DraftMTP
					break
				}
			}
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("generated invalid model: %v", err)
		}
		return m
	})
}

func genSmallLayer(t *rapid.T) groups.Layer {
	dt := GenDType().Draw(t, "dtype")
	kind := rapid.SampledFrom(append(groups.Kinds(), groups.Recurrent)).Draw(t, "kind") // recurrent twice as likely
	l := groups.Layer{Kind: kind}
	switch kind {
	case groups.FullAttention, groups.SlidingWindow, groups.ChunkedLocal:
		a := &groups.Attention{
			KVHeads: rapid.SampledFrom([]int{1, 2, 4, 8, 16}).Draw(t, "kv_heads"),
			HeadDim: rapid.IntRange(1, 12).Draw(t, "head_dim"),
			DType:   dt,
			Scales:  rapid.IntRange(0, 3).Draw(t, "scales") == 0,
		}
		if rapid.IntRange(0, 3).Draw(t, "v") == 0 {
			a.HeadDimV = rapid.IntRange(1, 12).Draw(t, "head_dim_v")
		}
		if kind == groups.SlidingWindow {
			a.Window = rapid.IntRange(1, 96).Draw(t, "window")
		}
		if kind == groups.ChunkedLocal {
			a.Chunk = rapid.IntRange(1, 96).Draw(t, "chunk")
		}
		l.Attention = a
	case groups.MLA:
		if rapid.IntRange(0, 4).Draw(t, "fp8_ds_mla") == 0 {
			l.MLA = &groups.MLASpec{LatentDim: 512, RopeDim: 64, DType: groups.FP8E4M3, Format: groups.MLAFP8DS}
		} else {
			l.MLA = &groups.MLASpec{LatentDim: rapid.IntRange(1, 24).Draw(t, "latent"), RopeDim: rapid.IntRange(0, 8).Draw(t, "rope"), DType: dt}
		}
	case groups.Indexer:
		l.Indexer = &groups.IndexerSpec{HeadDim: 128}
	case groups.Recurrent:
		r := &groups.RecurrentSpec{
			Type:       rapid.SampledFrom(groups.RecurrentTypes()).Draw(t, "rtype"),
			ConvKernel: rapid.IntRange(2, 5).Draw(t, "conv_kernel"),
			ConvDType:  dt,
		}
		ns := rapid.IntRange(1, 3).Draw(t, "segments")
		for i := 0; i < ns; i++ {
			seg := groups.Segment{Name: fmt.Sprintf("s%d", i), UnitWidth: rapid.IntRange(1, 5).Draw(t, "unit_width")}
			if rapid.IntRange(0, 3).Draw(t, "replicate") == 0 {
				seg.Units, seg.Replicate = rapid.SampledFrom([]int{1, 2, 4, 8}).Draw(t, "rep_units"), true
			} else {
				seg.Units = maxTP * rapid.IntRange(1, 2).Draw(t, "units")
			}
			r.Segments = append(r.Segments, seg)
		}
		nst := rapid.IntRange(0, 2).Draw(t, "states")
		for i := 0; i < nst; i++ {
			dims := rapid.SliceOfN(rapid.IntRange(1, 4), 1, 2).Draw(t, "dims")
			r.States = append(r.States, groups.State{Name: fmt.Sprintf("st%d", i), Heads: maxTP * rapid.IntRange(1, 2).Draw(t, "heads"),
				Dims: dims, DType: GenDType().Draw(t, "state_dtype")})
		}
		l.Recurrent = r
	}
	return l
}

// GenInstance draws an instance configuration for tp.
func GenInstance(t *rapid.T, label string, tp int) groups.InstanceConfig {
	kbs := rapid.SampledFrom([]int{1, 2, 4, 8, 16}).Draw(t, label+"_kernel_block")
	return groups.InstanceConfig{
		TP:              tp,
		KernelBlockSize: kbs,
		BlockSize:       kbs * rapid.IntRange(1, 4).Draw(t, label+"_block_mult"),
		Memory:          rapid.SampledFrom([]groups.MemoryLayout{groups.Unified, groups.Separate}).Draw(t, label+"_memory"),
		AttnLayout:      rapid.SampledFrom([]groups.AttnLayout{groups.HND, groups.NHD}).Draw(t, label+"_layout"),
		ConvLayout:      rapid.SampledFrom([]groups.ConvLayout{groups.DS, groups.SD}).Draw(t, label+"_conv_layout"),
		BlockLayout:     rapid.SampledFrom([]groups.BlockLayout{groups.PerLayer, groups.CrossLayer}).Draw(t, label+"_block_layout"),
	}
}

// GenTransferCase draws a model, a P and a D (tp pairs in both directions,
// block sizes, kernel blocks, layouts, memory layouts), prompt lengths and a
// mode.
func GenTransferCase() *rapid.Generator[TransferCase] {
	return rapid.Custom(func(t *rapid.T) TransferCase {
		m := GenTransferModel().Draw(t, "model")
		return TransferCase{
			Model:        m,
			P:            GenInstance(t, "p", rapid.SampledFrom(tps).Draw(t, "p_tp")),
			D:            GenInstance(t, "d", rapid.SampledFrom(tps).Draw(t, "d_tp")),
			PromptTokens: rapid.IntRange(1, 300).Draw(t, "prompt_tokens"),
			Requests:     rapid.IntRange(1, 4).Draw(t, "requests"),
			Seed:         rapid.Uint64().Draw(t, "seed"),
			Mode:         rapid.SampledFrom([]plan.Mode{plan.Direct, plan.Staged, plan.Auto}).Draw(t, "mode"),
		}
	})
}

// CheckTransfer runs c through the planner and the in-process executor and
// fails t unless D's memory is byte-exact (every owned byte equals the
// pattern, no other byte changed), direct plans read exactly the bytes D
// needed and their reads are maximal contiguous runs.
func CheckTransfer(t *rapid.T, c TransferCase) *verify.Result {
	res, err := verify.Run(verify.Config{Model: c.Model, P: c.P, D: c.D, PromptTokens: c.PromptTokens,
		Requests: c.Requests, Seed: c.Seed, Mode: c.Mode})
	if err != nil {
		t.Fatalf("%v: %v", c, err)
	}
	if !res.OK() {
		t.Fatalf("%v: %d byte mismatches, %d untouched violations: %s", c, res.ByteMismatches, res.UntouchedViolations, res.FirstProblem)
	}
	if c.Mode == plan.Direct {
		if res.BytesMoved != res.ExpectedBytes {
			t.Fatalf("%v: read %d bytes, D needed %d", c, res.BytesMoved, res.ExpectedBytes)
		}
		if res.NonMaximalReads != 0 {
			t.Fatalf("%v: %d reads could have been merged", c, res.NonMaximalReads)
		}
	}
	return res
}
