package groups

import "fmt"

// Shard is the run of shard units (heads, groups, channels) one rank holds.
type Shard struct {
	First, Count int
	// Replicas is how many ranks hold exactly these units (1 when sharded).
	Replicas int
}

// ShardUnits returns the units rank holds out of units at tensor-parallel
// size tp. With units divisible by tp each rank holds units/tp contiguous
// units. When replicate is set and tp is a multiple of units, each rank holds
// one unit, unit rank*units/tp, shared by tp/units ranks (KV heads when
// tp > kv_heads; Mamba2 groups padded up to tp). Anything else is
// ErrImpossibleTP.
func ShardUnits(units, tp, rank int, replicate bool) (Shard, error) {
	if tp <= 0 || rank < 0 || rank >= tp {
		return Shard{}, fmt.Errorf("%w: rank %d of tp %d", ErrImpossibleTP, rank, tp)
	}
	if units <= 0 {
		return Shard{}, fmt.Errorf("%w: %d units", ErrImpossibleTP, units)
	}
	if units%tp == 0 {
		n := units / tp
		return Shard{First: rank * n, Count: n, Replicas: 1}, nil
	}
	if replicate && tp%units == 0 {
		return Shard{First: rank * units / tp, Count: 1, Replicas: tp / units}, nil
	}
	if replicate {
		return Shard{}, fmt.Errorf("%w: %d units cannot be split or replicated over tp %d (need units %% tp == 0 or tp %% units == 0)", ErrImpossibleTP, units, tp)
	}
	return Shard{}, fmt.Errorf("%w: %d units are not divisible by tp %d", ErrImpossibleTP, units, tp)
}

// SegmentShard is one conv segment on one rank.
type SegmentShard struct {
	Segment
	Shard
	// Offset is the segment's first channel in the rank's conv state.
	Offset int
}

// Channels is the number of channels of the segment this rank holds.
func (s SegmentShard) Channels() int { return s.Count * s.UnitWidth }

// GlobalChannel maps a local channel of this segment (0-based within the
// segment shard) to its channel in the tp-1 segment.
func (s SegmentShard) GlobalChannel(c int) int { return s.First*s.UnitWidth + c }

// StateShard is one recurrent state tensor on one rank.
type StateShard struct {
	State
	Shard
	Offset int // byte offset of the tensor within the recurrent page
	Bytes  int // bytes on this rank
}

// LayerShape is one layer's per-rank shape and sizes.
type LayerShape struct {
	Layer *Layer
	TP    int
	Rank  int
	// Attention kinds.
	Heads      Shard // KV heads (FullAttention/SlidingWindow/ChunkedLocal); {0,1,tp} for MLA and Indexer
	KBytes     int   // bytes of one K head vector (or the whole MLA/indexer token)
	VBytes     int   // bytes of one V head vector (0 for MLA/indexer)
	ScaleBytes int   // bytes of one scale (4 when Attention.Scales, else 0)
	TokenBytes int   // bytes per token on this rank
	// Recurrent.
	ConvRows   int
	ConvDim    int // channels on this rank
	ConvElem   int // conv dtype size
	ConvBytes  int
	Segments   []SegmentShard
	States     []StateShard
	StateBytes int // conv + all states: one request's fixed state on this rank
}

// MLATokenBytes is the per-token size of an MLA cache.
func MLATokenBytes(m *MLASpec) int {
	if m.Format == MLAFP8DS {
		return 656
	}
	return (m.LatentDim + m.RopeDim) * m.DType.Size()
}

// IndexerTokenBytes is the per-token size of an indexer cache: head_dim fp8
// values plus one fp32 scale per 128 values.
func IndexerTokenBytes(x *IndexerSpec) int { return x.HeadDim + x.HeadDim/128*4 }

// ConvRows is the number of rows of every conv state of m.
func (m *Model) ConvRows(r *RecurrentSpec) int { return r.ConvKernel - 1 + m.NumSpeculativeTokens }

// Shape returns layer i's shape on rank of tp.
func (m *Model) Shape(i, tp, rank int) (LayerShape, error) {
	l := &m.Layers[i]
	s := LayerShape{Layer: l, TP: tp, Rank: rank}
	wrap := func(err error) error {
		return fmt.Errorf("layer %d (%s): %w", i, l.Name, err)
	}
	switch l.Kind {
	case FullAttention, SlidingWindow, ChunkedLocal:
		a := l.Attention
		if a.QHeads > 0 && tp > 0 && a.QHeads%tp != 0 {
			return s, wrap(fmt.Errorf("%w: %d query heads are not divisible by tp %d", ErrImpossibleTP, a.QHeads, tp))
		}
		h, err := ShardUnits(a.KVHeads, tp, rank, true)
		if err != nil {
			return s, wrap(err)
		}
		s.Heads = h
		e := a.DType.Size()
		s.KBytes, s.VBytes = a.HeadDim*e, a.VDim()*e
		if a.Scales {
			s.ScaleBytes = 4
		}
		s.TokenBytes = h.Count * (s.KBytes + s.VBytes + 2*s.ScaleBytes)
	case MLA, Indexer:
		if tp <= 0 || rank < 0 || rank >= tp {
			return s, wrap(fmt.Errorf("%w: rank %d of tp %d", ErrImpossibleTP, rank, tp))
		}
		s.Heads = Shard{First: 0, Count: 1, Replicas: tp}
		if l.Kind == MLA {
			s.KBytes = MLATokenBytes(l.MLA)
		} else {
			s.KBytes = IndexerTokenBytes(l.Indexer)
		}
		s.TokenBytes = s.KBytes
	case Recurrent:
		r := l.Recurrent
		s.ConvRows = m.ConvRows(r)
		s.ConvElem = r.ConvDType.Size()
		for _, seg := range r.Segments {
			sh, err := ShardUnits(seg.Units, tp, rank, seg.Replicate)
			if err != nil {
				return s, wrap(fmt.Errorf("conv segment %s: %w", seg.Name, err))
			}
			ss := SegmentShard{Segment: seg, Shard: sh, Offset: s.ConvDim}
			s.Segments = append(s.Segments, ss)
			s.ConvDim += ss.Channels()
		}
		s.ConvBytes = s.ConvRows * s.ConvDim * s.ConvElem
		off := s.ConvBytes
		for _, st := range r.States {
			sh, err := ShardUnits(st.Heads, tp, rank, false)
			if err != nil {
				return s, wrap(fmt.Errorf("state %s: %w", st.Name, err))
			}
			b := sh.Count * st.HeadElems() * st.DType.Size()
			s.States = append(s.States, StateShard{State: st, Shard: sh, Offset: off, Bytes: b})
			off += b
		}
		s.StateBytes = off
	default:
		return s, wrap(fmt.Errorf("%w: invalid kind", ErrInvalidSpec))
	}
	return s, nil
}

// CheckTP reports whether every layer of m can be sharded over tp, with the
// reason when not.
func (m *Model) CheckTP(tp int) error {
	if tp <= 0 {
		return fmt.Errorf("%w: tp %d", ErrImpossibleTP, tp)
	}
	for i := range m.Layers {
		for r := 0; r < tp; r++ {
			if _, err := m.Shape(i, tp, r); err != nil {
				return err
			}
		}
	}
	return nil
}
