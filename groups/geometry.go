package groups

import (
	"fmt"
	"strings"
)

// MemoryLayout says how an instance lays out its cache memory.
type MemoryLayout string

// Memory layouts. Unified is vLLM's: every group shares one pool of equal
// pages; attention block sizes grow until a page covers the recurrent state,
// and smaller pages are padded. Separate is SGLang's: a pool per layer spec,
// each with its own page size; recurrent pools hold one state per slot.
const (
	Unified  MemoryLayout = "unified"
	Separate MemoryLayout = "separate"
)

// BlockLayout says how a pool's layers share registered memory.
type BlockLayout string

// Block layouts. PerLayer registers one region per layer slot of a pool
// (vLLM's default: a tensor per layer, block b of every layer at
// b*PageStride of its own tensor). CrossLayer registers one region per pool
// whose block b is the pages of all the pool's layer slots back to back,
// in slot order (a group's layers in the group's order), so one block of a
// group is one contiguous range across its layers (vLLM's cross-layer
// blocks, here for recurrent groups too).
const (
	PerLayer   BlockLayout = "per-layer"
	CrossLayer BlockLayout = "cross-layer"
)

// ParseBlockLayout parses per-layer or cross-layer, any case.
func ParseBlockLayout(s string) (BlockLayout, error) {
	switch v := BlockLayout(strings.ToLower(s)); v {
	case PerLayer, CrossLayer:
		return v, nil
	}
	return "", fmt.Errorf("%w: block layout %q (want per-layer or cross-layer)", ErrBadGeometry, s)
}

// AttnLayout is the order of an attention kernel block's K (and V) tensor.
type AttnLayout string

// Attention layouts: HND is (heads, tokens, head_dim); NHD (tokens, heads, head_dim).
const (
	HND AttnLayout = "HND"
	NHD AttnLayout = "NHD"
)

// ConvLayout is the order of a conv state.
type ConvLayout string

// Conv layouts: DS is (dim, rows), each segment contiguous; SD is (rows, dim).
const (
	DS ConvLayout = "DS"
	SD ConvLayout = "SD"
)

// DefaultKernelBlockSize is the attention kernel block used when none is given.
const DefaultKernelBlockSize = 16

// InstanceConfig is what an instance (P or D) chooses for its memory. None of
// it enters the compatibility hash: P and D may differ in all of it.
type InstanceConfig struct {
	TP int
	// BlockSize: with Unified the minimum attention block size (page-size
	// unification may raise it); with Separate the attention block size.
	BlockSize int
	// KernelBlockSize is the attention kernel's block; BlockSize must be a
	// multiple. 0: 16 when that divides BlockSize, else BlockSize.
	KernelBlockSize int
	Memory          MemoryLayout
	AttnLayout      AttnLayout
	ConvLayout      ConvLayout
	// BlockLayout: per-layer (the default) or cross-layer regions.
	BlockLayout BlockLayout `msgpack:",omitempty"`
}

// WithDefaults fills zero fields: unified memory, HND, DS, per-layer
// regions, block size 16.
func (c InstanceConfig) WithDefaults() InstanceConfig {
	if c.TP == 0 {
		c.TP = 1
	}
	if c.BlockSize == 0 {
		c.BlockSize = 16
	}
	if c.KernelBlockSize == 0 {
		c.KernelBlockSize = c.BlockSize
		if c.BlockSize%DefaultKernelBlockSize == 0 {
			c.KernelBlockSize = DefaultKernelBlockSize
		}
	}
	if c.Memory == "" {
		c.Memory = Unified
	}
	if c.AttnLayout == "" {
		c.AttnLayout = HND
	}
	if c.ConvLayout == "" {
		c.ConvLayout = DS
	}
	if c.BlockLayout == "" {
		c.BlockLayout = PerLayer
	}
	return c
}

func (c InstanceConfig) validate() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: "+f, append([]any{ErrBadGeometry}, a...)...) }
	switch {
	case c.BlockSize <= 0:
		return bad("block size %d", c.BlockSize)
	case c.KernelBlockSize <= 0 || c.BlockSize%c.KernelBlockSize != 0:
		return bad("block size %d is not a multiple of kernel block size %d", c.BlockSize, c.KernelBlockSize)
	case c.Memory != Unified && c.Memory != Separate:
		return bad("memory layout %q (want unified or separate)", c.Memory)
	case c.AttnLayout != HND && c.AttnLayout != NHD:
		return bad("attention layout %q (want HND or NHD)", c.AttnLayout)
	case c.ConvLayout != DS && c.ConvLayout != SD:
		return bad("conv layout %q (want DS or SD)", c.ConvLayout)
	case c.BlockLayout != PerLayer && c.BlockLayout != CrossLayer:
		return bad("block layout %q (want per-layer or cross-layer)", c.BlockLayout)
	case c.BlockSize > 1<<20:
		return bad("block size %d too large", c.BlockSize)
	}
	return nil
}

// ParseMemoryLayout, ParseAttnLayout and ParseConvLayout accept any case.
func ParseMemoryLayout(s string) (MemoryLayout, error) {
	switch v := MemoryLayout(strings.ToLower(s)); v {
	case Unified, Separate:
		return v, nil
	}
	return "", fmt.Errorf("%w: memory layout %q (want unified or separate)", ErrBadGeometry, s)
}

// ParseAttnLayout parses HND or NHD.
func ParseAttnLayout(s string) (AttnLayout, error) {
	switch v := AttnLayout(strings.ToUpper(s)); v {
	case HND, NHD:
		return v, nil
	}
	return "", fmt.Errorf("%w: attention layout %q (want HND or NHD)", ErrBadGeometry, s)
}

// ParseConvLayout parses DS or SD.
func ParseConvLayout(s string) (ConvLayout, error) {
	switch v := ConvLayout(strings.ToUpper(s)); v {
	case DS, SD:
		return v, nil
	}
	return "", fmt.Errorf("%w: conv layout %q (want DS or SD)", ErrBadGeometry, s)
}

// GroupGeometry is a KV cache group on one rank.
type GroupGeometry struct {
	KVGroup
	BlockSize int // tokens per block (recurrent: the state block size used by align/all modes)
	PageBytes int // real bytes of one layer's page; the pool's stride may be larger (padding)
	Pool      int
}

// PoolGeometry is one block pool's memory: Slots layer slots of NumBlocks
// pages each, PageStride bytes per page. Per layer, slot s is region s and
// keeps block b at offset b*PageStride; cross-layer, the pool is region 0,
// block b spans [b*Slots*PageStride, (b+1)*Slots*PageStride), and the
// group holding the block packs its layers' pages there back to back: slot
// s at s*PageBytes of the group (Geometry.Place), any padding at the end.
type PoolGeometry struct {
	PageStride int
	Slots      int
	Groups     []int
	CrossLayer bool
}

// Regions is the number of registered regions of the pool.
func (p *PoolGeometry) Regions() int {
	if p.CrossLayer {
		return 1
	}
	return p.Slots
}

// BlockStride is the distance between consecutive block ids in a region.
func (p *PoolGeometry) BlockStride() int {
	if p.CrossLayer {
		return p.Slots * p.PageStride
	}
	return p.PageStride
}

// Place is where the pages of layer slot slot of group g live: their
// region in g's pool and their offset within a block.
func (g *Geometry) Place(group, slot int) (region, offset int) {
	gg := &g.Groups[group]
	if g.Pools[gg.Pool].CrossLayer {
		return 0, slot * gg.PageBytes
	}
	return slot, 0
}

// Geometry is everything about one rank's cache memory that the allocator,
// the planner and the kernels need: groups and their block sizes, pools,
// where each layer lives and its per-rank shape.
type Geometry struct {
	Model  *Model
	Config InstanceConfig
	Rank   int
	Groups []GroupGeometry
	Pools  []PoolGeometry
	// Per model layer: its group, its slot in the group's pool, its shape.
	LayerGroup []int
	LayerSlot  []int
	Shapes     []LayerShape
}

// NewGeometry computes rank's geometry for m under c (defaults applied).
func NewGeometry(m *Model, c InstanceConfig, rank int) (*Geometry, error) {
	c = c.WithDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if err := m.CheckTP(c.TP); err != nil {
		return nil, err
	}
	g := &Geometry{Model: m, Config: c, Rank: rank}
	g.Shapes = make([]LayerShape, len(m.Layers))
	for i := range m.Layers {
		s, err := m.Shape(i, c.TP, rank)
		if err != nil {
			return nil, err
		}
		g.Shapes[i] = s
	}
	kg := m.KVGroups()
	g.LayerGroup = make([]int, len(m.Layers))
	g.LayerSlot = make([]int, len(m.Layers))
	g.Groups = make([]GroupGeometry, len(kg))
	// Per-token bytes per attention group; largest recurrent page.
	tMax, recPage := 0, 0
	for i, k := range kg {
		g.Groups[i].KVGroup = k
		for slot, li := range k.Layers {
			g.LayerGroup[li], g.LayerSlot[li] = i, slot
		}
		s := g.Shapes[k.Layers[0]]
		if k.Kind == Recurrent {
			recPage = max(recPage, s.StateBytes)
		} else {
			tMax = max(tMax, s.TokenBytes)
		}
	}
	bs, kbs := c.BlockSize, c.KernelBlockSize
	if c.Memory == Unified {
		// The largest attention page must cover the recurrent page.
		bsMax := bs
		if tMax > 0 && recPage > bs*tMax {
			bsMax = bs * ceilDiv(recPage, bs*tMax)
		}
		page := bsMax * tMax
		if tMax == 0 {
			page = recPage
		}
		if page > 1<<34 {
			return nil, fmt.Errorf("%w: unified page of %d bytes", ErrBadGeometry, page)
		}
		slots := 0
		for i := range g.Groups {
			gg := &g.Groups[i]
			s := g.Shapes[gg.Layers[0]]
			gg.Pool = 0
			if gg.Kind == Recurrent {
				gg.BlockSize, gg.PageBytes = bsMax, s.StateBytes
			} else {
				gg.BlockSize = page / s.TokenBytes / kbs * kbs
				gg.PageBytes = gg.BlockSize * s.TokenBytes
			}
			slots = max(slots, len(gg.Layers))
		}
		pg := PoolGeometry{PageStride: page, Slots: slots}
		for i := range g.Groups {
			pg.Groups = append(pg.Groups, i)
		}
		g.Pools = []PoolGeometry{pg}
		g.setBlockLayout()
		return g, nil
	}
	// Separate: one pool per layer spec; groups of equal spec share it.
	poolOf := map[string]int{}
	for i := range g.Groups {
		gg := &g.Groups[i]
		l := &m.Layers[gg.Layers[0]]
		s := g.Shapes[gg.Layers[0]]
		if gg.Kind == Recurrent {
			gg.BlockSize, gg.PageBytes = bs, s.StateBytes
		} else {
			gg.BlockSize, gg.PageBytes = bs, bs*s.TokenBytes
		}
		key := specKey(l)
		p, ok := poolOf[key]
		if !ok {
			p = len(g.Pools)
			poolOf[key] = p
			g.Pools = append(g.Pools, PoolGeometry{PageStride: gg.PageBytes})
		}
		gg.Pool = p
		g.Pools[p].Slots = max(g.Pools[p].Slots, len(gg.Layers))
		g.Pools[p].Groups = append(g.Pools[p].Groups, i)
	}
	g.setBlockLayout()
	return g, nil
}

func (g *Geometry) setBlockLayout() {
	for i := range g.Pools {
		g.Pools[i].CrossLayer = g.Config.BlockLayout == CrossLayer
	}
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// Layer returns the per-layer addressing helper for model layer i.
func (g *Geometry) Layer(i int) LayerGeometry {
	gg := &g.Groups[g.LayerGroup[i]]
	pg := &g.Pools[gg.Pool]
	region, off := g.Place(g.LayerGroup[i], g.LayerSlot[i])
	return LayerGeometry{
		LayerShape: g.Shapes[i], Index: i, Group: gg.ID, Pool: gg.Pool, Slot: g.LayerSlot[i],
		Region: region, SlotOffset: off, BlockStride: pg.BlockStride(),
		BlockSize: gg.BlockSize, KernelBlockSize: g.Config.KernelBlockSize,
		PageStride: pg.PageStride, PageBytes: gg.PageBytes,
		AttnLayout: g.Config.AttnLayout, ConvLayout: g.Config.ConvLayout,
	}
}

// LayerGeometry locates every element of one layer's page on one rank.
// Block id b's page of the layer starts at PageOffset(b) of region
// (Pool, Region) and spans PageBytes (PageStride with padding).
type LayerGeometry struct {
	LayerShape
	Index, Group, Pool, Slot int
	// Region is the layer's region within its pool (its slot per layer, 0
	// cross-layer); SlotOffset the offset of its page within a block (0
	// per layer, Slot*PageBytes cross-layer);
	// BlockStride the distance between block ids in the region.
	Region, SlotOffset, BlockStride int
	BlockSize                       int
	KernelBlockSize                 int
	PageStride, PageBytes           int
	AttnLayout                      AttnLayout
	ConvLayout                      ConvLayout
}

// PageOffset is the offset of block id b's page of the layer in its region.
func (l *LayerGeometry) PageOffset(b int) int64 {
	return int64(b)*int64(l.BlockStride) + int64(l.SlotOffset)
}

// kernelBlock returns the byte offset of the kernel block holding token t and
// t's index within it. MLA and indexer caches ignore kernel blocks' K/V split
// (one vector per token), which this formula covers with VBytes = 0.
func (l *LayerGeometry) kernelBlock(t int) (base, kt, kbs int) {
	kbs = l.KernelBlockSize
	if l.Layer.Kind == MLA || l.Layer.Kind == Indexer {
		kbs = l.BlockSize // one vector per token: kernel blocks are contiguous runs
	}
	return (t / kbs) * kbs * l.TokenBytes, t % kbs, kbs
}

func (l *LayerGeometry) headIndex(kt, head, kbs int) int {
	if l.AttnLayout == HND {
		return head*kbs + kt
	}
	return kt*l.Heads.Count + head
}

// KOffset is the byte offset within the page of token t's K vector for local
// head head (MLA/indexer: the token's whole vector, head 0).
func (l *LayerGeometry) KOffset(t, head int) int {
	base, kt, kbs := l.kernelBlock(t)
	return base + l.headIndex(kt, head, kbs)*l.KBytes
}

// VOffset is the byte offset within the page of token t's V vector.
func (l *LayerGeometry) VOffset(t, head int) int {
	base, kt, kbs := l.kernelBlock(t)
	return base + kbs*l.Heads.Count*l.KBytes + l.headIndex(kt, head, kbs)*l.VBytes
}

// ScaleOffset is the byte offset of token t's fp32 scale for K (v=false)
// or V (v=true) of local head head. Only when ScaleBytes > 0.
func (l *LayerGeometry) ScaleOffset(t, head int, v bool) int {
	base, kt, kbs := l.kernelBlock(t)
	off := base + kbs*l.Heads.Count*(l.KBytes+l.VBytes)
	if v {
		off += kbs * l.Heads.Count * l.ScaleBytes
	}
	return off + l.headIndex(kt, head, kbs)*l.ScaleBytes
}

// ConvOffset is the byte offset within a recurrent page of local conv
// channel c (0 <= c < ConvDim), row r.
func (l *LayerGeometry) ConvOffset(c, r int) int {
	if l.ConvLayout == DS {
		return (c*l.ConvRows + r) * l.ConvElem
	}
	return (r*l.ConvDim + c) * l.ConvElem
}

// StateOffset is the byte offset within a recurrent page of state tensor s,
// local head h.
func (l *LayerGeometry) StateOffset(s, h int) int {
	st := &l.States[s]
	return st.Offset + h*st.HeadElems()*st.DType.Size()
}
