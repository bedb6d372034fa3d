package plan

import (
	"errors"
	"fmt"

	"github.com/hybridxfer/hybridxfer/groups"
)

// Sentinel errors.
var (
	// ErrIncompatible: P and D cannot exchange state (different models, a
	// tp that cannot shard the model, ...).
	ErrIncompatible = errors.New("plan: incompatible instances")
	// ErrBadRequest: the request's block ids or token counts are
	// inconsistent with the geometry (wrong count, null, out of range).
	ErrBadRequest = errors.New("plan: bad request")
)

// BlockError names a block id that fails validation, on which side and in
// which group; it wraps ErrBadRequest.
type BlockError struct {
	Side  string // "prefill" or "decode"
	Group int
	Index int // position in the id list
	ID    int
	Msg   string
}

func (e *BlockError) Error() string {
	return fmt.Sprintf("%v: %s group %d block[%d]=%d: %s", ErrBadRequest, e.Side, e.Group, e.Index, e.ID, e.Msg)
}

func (e *BlockError) Unwrap() error { return ErrBadRequest }

// StagingPool is the Pool of a Region that names a rank's staging buffer
// (P: where gathers go; D: where staged reads and layout conversions land).
const StagingPool = -1

// Region names one registered memory range of a rank: a cache tensor
// (Pool, Slot) or the staging buffer (Pool == StagingPool).
type Region struct {
	Pool, Slot int
}

// LayerRegion is the region holding layer l's pages.
func LayerRegion(l *groups.LayerGeometry) Region {
	return Region{Pool: l.Pool, Slot: l.Region}
}

// Staging is the staging-buffer region.
var Staging = Region{Pool: StagingPool}

func (r Region) String() string {
	if r.Pool == StagingPool {
		return "staging"
	}
	return fmt.Sprintf("pool%d/slot%d", r.Pool, r.Slot)
}

// Read copies Len bytes from a remote rank's region into a local region.
type Read struct {
	Remote    Region
	RemoteOff int64
	Local     Region
	LocalOff  int64
	Len       int64
}

// StepKind says what a Step does.
type StepKind uint8

// Step kinds.
const (
	StepCopy      StepKind = iota + 1 // copy Len bytes
	StepTranspose                     // transpose a Rows x Cols matrix of ItemBytes items
)

// Step is one local post-processing (D) or gather (P) operation. Copy: Len
// bytes from Src to Dst. Transpose: the Rows x Cols matrix of ItemBytes items
// at Src (row-major) is written transposed (Cols x Rows, row-major) at Dst.
type Step struct {
	Kind       StepKind
	Src        Region
	SrcOff     int64
	Dst        Region
	DstOff     int64
	Len        int64
	Rows, Cols int
	ItemBytes  int
}

// Bytes is the number of bytes a step writes.
func (s Step) Bytes() int64 {
	if s.Kind == StepTranspose {
		return int64(s.Rows) * int64(s.Cols) * int64(s.ItemBytes)
	}
	return s.Len
}

// Mode chooses how reads are shaped.
type Mode uint8

// Modes. Direct reads every contiguous run straight from P's pages into D's
// (zero-copy, one descriptor per maximal run). Staged has P gather what one
// D rank needs into its staging buffer, D read it in one large read and
// scatter it (two extra copies, one descriptor). Auto picks per request with
// the cost model.
const (
	Auto Mode = iota
	Direct
	Staged
)

func (m Mode) String() string {
	switch m {
	case Direct:
		return "direct"
	case Staged:
		return "staged"
	}
	return "auto"
}

// ParseMode parses direct, staged or auto.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "direct":
		return Direct, nil
	case "staged":
		return Staged, nil
	case "auto", "":
		return Auto, nil
	}
	return Auto, fmt.Errorf("%w: mode %q (want direct, staged or auto)", ErrBadRequest, s)
}

// Side is one instance: the geometry of each of its ranks and the number of
// blocks of each pool (the same on every rank: one scheduler allocates for
// all ranks of an instance).
type Side struct {
	Ranks     []*groups.Geometry
	NumBlocks []int // per pool
}

// NewSide computes every rank's geometry for m under c.
func NewSide(m *groups.Model, c groups.InstanceConfig, numBlocks func(pool int, g *groups.Geometry) int) (*Side, error) {
	c = c.WithDefaults()
	s := &Side{}
	for r := 0; r < c.TP; r++ {
		g, err := groups.NewGeometry(m, c, r)
		if err != nil {
			return nil, err
		}
		s.Ranks = append(s.Ranks, g)
	}
	g0 := s.Ranks[0]
	for p := range g0.Pools {
		s.NumBlocks = append(s.NumBlocks, numBlocks(p, g0))
	}
	return s, nil
}

// TP is the side's tensor-parallel size.
func (s *Side) TP() int { return len(s.Ranks) }

// Request is one request's transfer, as D knows it.
type Request struct {
	// Tokens is H: P computed positions [0, H); their state moves.
	Tokens int
	// PBlocks, per group: P's block ids as sent in kv_transfer_params. For
	// per-token groups they are the LAST len ids of the ceil(H/bs) blocks
	// covering [0, H) (nulls removed, sliding windows clipped to live
	// blocks); for recurrent groups exactly one id, the state slot.
	PBlocks [][]int
	// DBlocks, per group: D's block table. Per-token groups: index k holds
	// the block of positions [k*bs, (k+1)*bs), 0 for null; it must cover
	// every position D receives. Recurrent groups: exactly one id.
	DBlocks [][]int
	// DHit is the number of leading tokens D already holds (a local prefix
	// cache hit); per-token groups only read positions >= DHit.
	DHit int
}

// RemotePlan is everything D rank does with one P rank for a request.
type RemotePlan struct {
	Rank int
	// Gather runs on the P rank before the reads (staged mode): copies from
	// P's pages into P's staging buffer.
	Gather []Step
	// StagingBytes is the size of P's staging buffer this plan uses.
	StagingBytes int64
	Reads        []Read
	Bytes        int64 // bytes read
}

// Plan is one D rank's complete transfer plan for one request.
type Plan struct {
	Mode    Mode
	DRank   int
	Remotes []RemotePlan // ascending P rank; only ranks read from
	// Post runs on D after every read completed, in order.
	Post []Step
	// ScratchBytes is the size of D's staging buffer the plan uses.
	ScratchBytes int64
	// Notify lists the P ranks D notifies when done (a superset of the
	// ranks read from: P ranks this D rank "consumes" by the static
	// notification plan, see Notifications).
	Notify []int
}

// NumReads is the number of read descriptors of the plan.
func (p *Plan) NumReads() int {
	n := 0
	for i := range p.Remotes {
		n += len(p.Remotes[i].Reads)
	}
	return n
}

// Bytes is the number of bytes read.
func (p *Plan) Bytes() int64 {
	var n int64
	for i := range p.Remotes {
		n += p.Remotes[i].Bytes
	}
	return n
}
