package statexfer

import (
	"errors"
	"fmt"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/vmihailenco/msgpack/v5"
)

// MetadataVersion is the version of the RankMeta encoding. Version 4:
// regions carry their memory kind, and cache regions of a rank that stages
// through host memory carry no key (they are not registered).
const MetadataVersion = 4

// ProtocolVersion enters the compatibility hash: P and D of different
// protocol versions refuse each other. Version 2: grants, transfer ids,
// lease answers, boot ids.
const ProtocolVersion = 2

// Sentinel errors.
var (
	ErrMetadata   = errors.New("statexfer: bad metadata")
	ErrBounds     = errors.New("statexfer: plan outside remote bounds")
	ErrTransfer   = errors.New("statexfer: transfer failed")
	ErrMessage    = errors.New("statexfer: bad message")
	ErrPeerFailed = errors.New("statexfer: peer failed")
)

// RegionMeta is one registered region of a rank: a cache tensor (Pool,
// Slot) or the staging buffer (Pool == plan.StagingPool).
type RegionMeta struct {
	Pool      int    `msgpack:"p"`
	Slot      int    `msgpack:"s"`
	Addr      uint64 `msgpack:"a"`
	Len       uint64 `msgpack:"l"`
	Key       []byte `msgpack:"k"`
	Stride    int64  `msgpack:"st"` // page stride (0 for staging)
	NumBlocks int    `msgpack:"nb"` // blocks (0 for staging)
	// Kind is the memory the region lives in (host by default).
	Kind transport.MemKind `msgpack:"mk"`
}

// Desc is the region's transport descriptor.
func (r *RegionMeta) Desc() transport.MemDesc {
	return transport.MemDesc{Addr: r.Addr, Len: r.Len, Key: r.Key, Kind: r.Kind}
}

// Registered reports whether peers can read the region: it has a key. A
// rank that stages through host memory publishes its cache regions (their
// sizes and kinds) without keys, and only its staging buffer is readable.
func (r *RegionMeta) Registered() bool { return len(r.Key) > 0 }

// GroupMeta is what a rank says of one KV cache group.
type GroupMeta struct {
	BlockSize int `msgpack:"bs"`
	PageBytes int `msgpack:"pb"`
	Pool      int `msgpack:"p"`
	ConvBytes int `msgpack:"cb,omitempty"` // recurrent groups: conv bytes per state
	StateSize int `msgpack:"sb,omitempty"` // recurrent groups: conv + state bytes
}

// RankMeta is what one rank publishes in the handshake.
type RankMeta struct {
	Version  int    `msgpack:"v"`
	EngineID string `msgpack:"e"`
	// BootID is the incarnation of the engine: new every time the process
	// starts, so a P restarted at the same address is a new peer.
	BootID    string                `msgpack:"b"`
	DPIndex   int                   `msgpack:"dp"`
	TP        int                   `msgpack:"tp"`
	Rank      int                   `msgpack:"r"`
	Address   []byte                `msgpack:"addr"`
	Config    groups.InstanceConfig `msgpack:"cfg"`
	Groups    []GroupMeta           `msgpack:"g"`
	Regions   []RegionMeta          `msgpack:"rg"`
	Timestamp int64                 `msgpack:"ts"`
}

// maxMetaBytes caps a handshake payload.
const maxMetaBytes = 16 << 20

// EncodeRankMetas encodes the metadata of an instance's ranks.
func EncodeRankMetas(ms []RankMeta) ([]byte, error) {
	return msgpack.Marshal(struct {
		V int        `msgpack:"v"`
		M []RankMeta `msgpack:"m"`
	}{MetadataVersion, ms})
}

// DecodeRankMetas decodes and sanity-checks a handshake payload. Any input
// gives metadata or an error, never a panic.
func DecodeRankMetas(b []byte) (ms []RankMeta, err error) {
	if len(b) > maxMetaBytes {
		return nil, fmt.Errorf("%w: %d bytes", ErrMetadata, len(b))
	}
	defer func() {
		if r := recover(); r != nil { // the decoder must never take the process down
			ms, err = nil, fmt.Errorf("%w: decoder panic: %v", ErrMetadata, r)
		}
	}()
	if err := checkMsgpack(b); err != nil {
		return nil, err
	}
	var v struct {
		V int        `msgpack:"v"`
		M []RankMeta `msgpack:"m"`
	}
	if err := msgpack.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMetadata, err)
	}
	if v.V != MetadataVersion {
		return nil, fmt.Errorf("%w: metadata version %d, this build speaks %d", ErrMetadata, v.V, MetadataVersion)
	}
	for i := range v.M {
		if err := v.M[i].sane(); err != nil {
			return nil, fmt.Errorf("rank meta %d: %w", i, err)
		}
	}
	return v.M, nil
}

func (m *RankMeta) sane() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: "+f, append([]any{ErrMetadata}, a...)...) }
	switch {
	case m.Version != MetadataVersion:
		return bad("version %d", m.Version)
	case m.TP <= 0 || m.TP > 1024 || m.Rank < 0 || m.Rank >= m.TP:
		return bad("rank %d of tp %d", m.Rank, m.TP)
	case len(m.Address) == 0:
		return bad("no transport address")
	case len(m.Regions) == 0 || len(m.Regions) > 1<<16 || len(m.Groups) > 1<<12:
		return bad("%d regions, %d groups", len(m.Regions), len(m.Groups))
	}
	for i, r := range m.Regions {
		if r.Len == 0 || r.Stride < 0 || r.NumBlocks < 0 || (r.Pool != plan.StagingPool && (r.Pool < 0 || r.Slot < 0)) {
			return bad("region %d: %+v", i, r)
		}
		if err := r.Kind.Valid(); err != nil {
			return bad("region %d: %v", i, err)
		}
		if r.Pool == plan.StagingPool && !r.Registered() {
			return bad("region %d: staging buffer without a key", i)
		}
		if r.Pool != plan.StagingPool && uint64(r.Stride)*uint64(r.NumBlocks) > r.Len {
			return bad("region %d: %d blocks of %d bytes exceed its %d bytes", i, r.NumBlocks, r.Stride, r.Len)
		}
	}
	return nil
}

// Direct reports whether D can read the rank's cache directly: every cache
// region is registered. When it is not (the rank stages through host
// memory), the reason says so, and only staged plans can read from it.
func (m *RankMeta) Direct() (ok bool, reason string) {
	for _, r := range m.Regions {
		if r.Pool != plan.StagingPool && !r.Registered() {
			return false, fmt.Sprintf("prefill rank %d stages through host memory (its %s cache is not registered for remote reads)", m.Rank, r.Kind)
		}
	}
	return true, ""
}

// Region returns the region (pool, slot), or nil.
func (m *RankMeta) Region(r plan.Region) *RegionMeta {
	for i := range m.Regions {
		if m.Regions[i].Pool == r.Pool && (r.Pool == plan.StagingPool || m.Regions[i].Slot == r.Slot) {
			return &m.Regions[i]
		}
	}
	return nil
}

// CheckAgainst compares a remote rank's metadata with the geometry this side
// computes for the remote's InstanceConfig: same tp, groups, block sizes,
// page sizes, pools, block layout, strides and a region for every (pool,
// slot), or for every pool cross-layer. Returns
// the remote's block count per pool.
func (m *RankMeta) CheckAgainst(g *groups.Geometry) ([]int, error) {
	bad := func(f string, a ...any) error {
		return fmt.Errorf("%w: rank %d: "+f, append([]any{ErrMetadata, m.Rank}, a...)...)
	}
	if g.Config.TP != m.TP || g.Rank != m.Rank {
		return nil, bad("geometry for rank %d of %d, metadata says %d of %d", g.Rank, g.Config.TP, m.Rank, m.TP)
	}
	if len(m.Groups) != len(g.Groups) {
		return nil, bad("%d groups, the model has %d", len(m.Groups), len(g.Groups))
	}
	for i, gg := range g.Groups {
		mg := m.Groups[i]
		if mg.BlockSize != gg.BlockSize || mg.PageBytes != gg.PageBytes || mg.Pool != gg.Pool {
			return nil, bad("group %d: block %d page %d pool %d, expected %d, %d, %d", i, mg.BlockSize, mg.PageBytes, mg.Pool, gg.BlockSize, gg.PageBytes, gg.Pool)
		}
	}
	nb := make([]int, len(g.Pools))
	for p, pg := range g.Pools {
		nb[p] = -1
		for s := 0; s < pg.Regions(); s++ {
			r := m.Region(plan.Region{Pool: p, Slot: s})
			if r == nil {
				return nil, bad("no region for pool %d slot %d (%s)", p, s, g.Config.BlockLayout)
			}
			if r.Stride != int64(pg.BlockStride()) {
				return nil, bad("pool %d slot %d: stride %d, expected %d (%s)", p, s, r.Stride, pg.BlockStride(), g.Config.BlockLayout)
			}
			if nb[p] >= 0 && r.NumBlocks != nb[p] {
				return nil, bad("pool %d: slots disagree on the block count", p)
			}
			nb[p] = r.NumBlocks
		}
	}
	return nb, nil
}
