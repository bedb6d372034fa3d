package groups

import (
	"fmt"
	"strings"
)

// Kind is the kind of state a layer keeps, which decides how the allocator
// manages its blocks and how tensor parallelism shards it.
type Kind uint8

// Layer kinds.
const (
	KindInvalid   Kind = iota
	FullAttention      // K and V per token, all tokens kept
	SlidingWindow      // as FullAttention, only the last Window tokens needed
	ChunkedLocal       // as FullAttention, only the current chunk of Chunk tokens needed
	MLA                // one latent vector per token, replicated on every rank
	Indexer            // DeepSeek-V3.2 indexer cache: fp8 keys + fp32 scales per token
	Recurrent          // conv state + recurrent state per request (Mamba, GDN, KDA, ...)
)

var kindNames = [...]string{
	KindInvalid:   "invalid",
	FullAttention: "full_attention",
	SlidingWindow: "sliding_window",
	ChunkedLocal:  "chunked_local",
	MLA:           "mla",
	Indexer:       "indexer",
	Recurrent:     "recurrent",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// PerToken reports whether the kind keeps state per token (every valid kind but Recurrent).
func (k Kind) PerToken() bool { return k.Valid() && k != Recurrent }

// ParseKind parses a Kind name as written by String.
func ParseKind(s string) (Kind, error) {
	for k, n := range kindNames {
		if n == s && k != int(KindInvalid) {
			return Kind(k), nil
		}
	}
	return KindInvalid, fmt.Errorf("%w: unknown layer kind %q", ErrInvalidSpec, s)
}

// MarshalText implements encoding.TextMarshaler.
func (k Kind) MarshalText() ([]byte, error) {
	if k == KindInvalid || int(k) >= len(kindNames) {
		return nil, fmt.Errorf("%w: cannot encode kind %d", ErrInvalidSpec, uint8(k))
	}
	return []byte(k.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *Kind) UnmarshalText(b []byte) error {
	v, err := ParseKind(string(b))
	*k = v
	return err
}

// RecurrentType names the family of a recurrent layer. The state shapes are
// fully described by RecurrentSpec; the type is kept for display and the
// compatibility hash.
type RecurrentType string

// Recurrent layer families.
const (
	Mamba2    RecurrentType = "mamba2"
	Mamba1    RecurrentType = "mamba1"
	GDN       RecurrentType = "gdn"
	KDA       RecurrentType = "kda"
	ShortConv RecurrentType = "short_conv"
)

// DraftKind says what the draft layers of a model are.
type DraftKind string

// Draft kinds. DraftNone means the model has no draft layers.
const (
	DraftNone   DraftKind = ""
	DraftMTP    DraftKind = "mtp"
	DraftEagle3 DraftKind = "eagle3"
)

// MLAFormat is the storage format of an MLA latent cache.
type MLAFormat string

// MLA formats. MLAPlain stores (LatentDim+RopeDim) elements of the spec's
// dtype per token; MLAFP8DS is DeepSeek's fp8_ds_mla: 512 fp8 NoPE values,
// 4 fp32 scales and 64 bf16 RoPE values, 656 bytes per token.
const (
	MLAPlain MLAFormat = ""
	MLAFP8DS MLAFormat = "fp8_ds_mla"
)

// Attention describes a full, sliding-window or chunked-local attention layer.
type Attention struct {
	KVHeads int `json:"kv_heads"`
	// QHeads is the query head count at tp 1 (num_attention_heads), a
	// multiple of KVHeads; tp must divide it, as vLLM's attention layers
	// assert. 0: not known, not checked.
	QHeads   int   `json:"q_heads,omitempty"`
	HeadDim  int   `json:"head_dim"`
	HeadDimV int   `json:"head_dim_v,omitempty"` // 0: same as HeadDim
	DType    DType `json:"dtype"`
	// Scales adds one fp32 scale per token, per head, for K and for V
	// (fp8/int8 per-token-head quantization).
	Scales bool `json:"scales,omitempty"`
	Window int  `json:"window,omitempty"` // SlidingWindow only
	Chunk  int  `json:"chunk,omitempty"`  // ChunkedLocal only
}

// VDim is the value head dimension.
func (a *Attention) VDim() int {
	if a.HeadDimV > 0 {
		return a.HeadDimV
	}
	return a.HeadDim
}

// MLASpec describes a multi-head latent attention cache (one vector per token).
type MLASpec struct {
	LatentDim int       `json:"latent_dim"` // kv_lora_rank
	RopeDim   int       `json:"rope_dim"`   // qk_rope_head_dim
	DType     DType     `json:"dtype"`
	Format    MLAFormat `json:"format,omitempty"`
}

// IndexerSpec describes a DeepSeek-V3.2 indexer cache: HeadDim fp8 values
// plus one fp32 scale per 128 values, per token.
type IndexerSpec struct {
	HeadDim int `json:"head_dim"`
}

// Segment is one independently sharded part of a conv state's channel axis:
// Units shard units (heads or groups) of UnitWidth channels each. A rank
// holds a contiguous run of units. Replicate allows tp > Units when tp is a
// multiple of Units (Mamba2's n_groups padding): each rank then holds one
// unit, shared by tp/Units ranks.
type Segment struct {
	Name      string `json:"name"`
	Units     int    `json:"units"`
	UnitWidth int    `json:"unit_width"`
	Replicate bool   `json:"replicate,omitempty"`
}

// Channels is the segment's width at tp 1.
func (s Segment) Channels() int { return s.Units * s.UnitWidth }

// State is one recurrent state tensor: Heads heads (sharded by tp), each of
// shape Dims, in DType.
type State struct {
	Name  string `json:"name"`
	Heads int    `json:"heads"`
	Dims  []int  `json:"dims"`
	DType DType  `json:"dtype"`
}

// HeadElems is the number of elements of one head.
func (s State) HeadElems() int {
	n := 1
	for _, d := range s.Dims {
		n *= d
	}
	return n
}

// RecurrentSpec describes a linear layer's per-request state: a conv state of
// (ConvKernel-1+num_speculative_tokens) rows over the concatenated Segments,
// plus the State tensors.
type RecurrentSpec struct {
	Type       RecurrentType `json:"type"`
	ConvKernel int           `json:"conv_kernel"`
	ConvDType  DType         `json:"conv_dtype"`
	Segments   []Segment     `json:"segments"`
	States     []State       `json:"states"`
}

// ConvChannels is the conv state's channel count at tp 1.
func (r *RecurrentSpec) ConvChannels() int {
	n := 0
	for _, s := range r.Segments {
		n += s.Channels()
	}
	return n
}

// Layer is one cache-owning layer: one tensor (or K/V pair) per block. A
// decoder layer with two caches (DeepSeek-V3.2's MLA and indexer,
// Falcon-H1's attention and Mamba2 mixer) is two Layers, the second marked
// Parallel.
type Layer struct {
	Name  string `json:"name"`
	Kind  Kind   `json:"kind"`
	Draft bool   `json:"draft,omitempty"`
	// Parallel: the layer belongs to the decoder layer of the layer before
	// it; both read the same input and their outputs are added (what a
	// model computes, not what it stores: the transfer ignores it).
	Parallel  bool           `json:"parallel,omitempty"`
	Attention *Attention     `json:"attention,omitempty"`
	MLA       *MLASpec       `json:"mla,omitempty"`
	Indexer   *IndexerSpec   `json:"indexer,omitempty"`
	Recurrent *RecurrentSpec `json:"recurrent,omitempty"`
}

// Model is a model spec: its cache layers in order plus the speculative
// decoding configuration. It is plain data; Validate checks it.
type Model struct {
	Name         string `json:"name"`
	Architecture string `json:"architecture,omitempty"`
	Layers       []Layer
	// NumSpeculativeTokens widens every conv state by that many rows and
	// gives recurrent groups that many scratch blocks.
	NumSpeculativeTokens int
	// Draft says what the layers marked Draft are.
	Draft DraftKind
}

// Validate checks every field and returns a *FieldError naming the first
// inconsistent one.
func (m *Model) Validate() error {
	if strings.TrimSpace(m.Name) == "" {
		return fieldErr("name", "empty")
	}
	if len(m.Layers) == 0 {
		return fieldErr("layers", "no layers")
	}
	if m.NumSpeculativeTokens < 0 || m.NumSpeculativeTokens > 64 {
		return fieldErr("num_speculative_tokens", fmt.Sprintf("%d out of range [0, 64]", m.NumSpeculativeTokens))
	}
	switch m.Draft {
	case DraftNone, DraftMTP, DraftEagle3:
	default:
		return fieldErr("draft", fmt.Sprintf("unknown draft kind %q", m.Draft))
	}
	names := make(map[string]int, len(m.Layers))
	drafts, targets := 0, 0
	for i := range m.Layers {
		l := &m.Layers[i]
		p := fmt.Sprintf("layers[%d]", i)
		if l.Name == "" {
			return fieldErr(p+".name", "empty")
		}
		if j, dup := names[l.Name]; dup {
			return fieldErr(p+".name", fmt.Sprintf("%q already used by layers[%d]", l.Name, j))
		}
		names[l.Name] = i
		if err := l.validate(p); err != nil {
			return err
		}
		if l.Parallel && (i == 0 || m.Layers[i-1].Draft != l.Draft) {
			return fieldErr(p+".parallel", "no layer of the same model before it to run in parallel with")
		}
		if l.Draft {
			drafts++
			if l.Kind == Recurrent {
				return fieldErr(p+".draft", "draft layers cannot be recurrent")
			}
		} else {
			if drafts > 0 {
				return fieldErr(p+".draft", "draft layers must come after all target layers")
			}
			targets++
		}
	}
	if targets == 0 {
		return fieldErr("layers", "only draft layers")
	}
	if drafts > 0 && m.Draft == DraftNone {
		return fieldErr("draft", "layers are marked draft but the draft kind is empty")
	}
	if drafts == 0 && m.Draft != DraftNone {
		return fieldErr("draft", fmt.Sprintf("draft kind %q but no draft layers", m.Draft))
	}
	return nil
}

func positive(field string, v int) error {
	if v <= 0 {
		return fieldErr(field, fmt.Sprintf("must be > 0, got %d", v))
	}
	return nil
}

func validDType(field string, d DType) error {
	if d.Size() == 0 {
		return fieldErr(field, "missing or invalid dtype")
	}
	return nil
}

func (l *Layer) validate(p string) error {
	set := 0
	for _, b := range []bool{l.Attention != nil, l.MLA != nil, l.Indexer != nil, l.Recurrent != nil} {
		if b {
			set++
		}
	}
	if set != 1 {
		return fieldErr(p, "exactly one of attention, mla, indexer, recurrent must be set")
	}
	switch l.Kind {
	case FullAttention, SlidingWindow, ChunkedLocal:
		a := l.Attention
		if a == nil {
			return fieldErr(p+".attention", "required for kind "+l.Kind.String())
		}
		if err := positive(p+".attention.kv_heads", a.KVHeads); err != nil {
			return err
		}
		if err := positive(p+".attention.head_dim", a.HeadDim); err != nil {
			return err
		}
		if a.HeadDimV < 0 {
			return fieldErr(p+".attention.head_dim_v", "negative")
		}
		if a.QHeads < 0 || a.QHeads%a.KVHeads != 0 {
			return fieldErr(p+".attention.q_heads", fmt.Sprintf("%d is not a multiple of kv_heads %d", a.QHeads, a.KVHeads))
		}
		if err := validDType(p+".attention.dtype", a.DType); err != nil {
			return err
		}
		switch l.Kind {
		case SlidingWindow:
			if err := positive(p+".attention.window", a.Window); err != nil {
				return err
			}
			if a.Chunk != 0 {
				return fieldErr(p+".attention.chunk", "only for chunked_local")
			}
		case ChunkedLocal:
			if err := positive(p+".attention.chunk", a.Chunk); err != nil {
				return err
			}
			if a.Window != 0 {
				return fieldErr(p+".attention.window", "only for sliding_window")
			}
		default:
			if a.Window != 0 || a.Chunk != 0 {
				return fieldErr(p+".attention", "window and chunk are only for sliding_window and chunked_local")
			}
		}
	case MLA:
		m := l.MLA
		if m == nil {
			return fieldErr(p+".mla", "required for kind mla")
		}
		if err := positive(p+".mla.latent_dim", m.LatentDim); err != nil {
			return err
		}
		if m.RopeDim < 0 {
			return fieldErr(p+".mla.rope_dim", "negative")
		}
		if err := validDType(p+".mla.dtype", m.DType); err != nil {
			return err
		}
		switch m.Format {
		case MLAPlain:
		case MLAFP8DS:
			if m.LatentDim != 512 || m.RopeDim != 64 {
				return fieldErr(p+".mla.format", "fp8_ds_mla needs latent_dim 512 and rope_dim 64")
			}
		default:
			return fieldErr(p+".mla.format", fmt.Sprintf("unknown format %q", m.Format))
		}
	case Indexer:
		if l.Indexer == nil {
			return fieldErr(p+".indexer", "required for kind indexer")
		}
		if err := positive(p+".indexer.head_dim", l.Indexer.HeadDim); err != nil {
			return err
		}
		if l.Indexer.HeadDim%128 != 0 {
			return fieldErr(p+".indexer.head_dim", "must be a multiple of 128 (one fp32 scale per 128 values)")
		}
	case Recurrent:
		r := l.Recurrent
		if r == nil {
			return fieldErr(p+".recurrent", "required for kind recurrent")
		}
		if !r.Type.valid() {
			return fieldErr(p+".recurrent.type", fmt.Sprintf("unknown recurrent type %q", r.Type))
		}
		if r.ConvKernel < 2 {
			return fieldErr(p+".recurrent.conv_kernel", fmt.Sprintf("must be >= 2, got %d", r.ConvKernel))
		}
		if err := validDType(p+".recurrent.conv_dtype", r.ConvDType); err != nil {
			return err
		}
		if len(r.Segments) == 0 {
			return fieldErr(p+".recurrent.segments", "at least one conv segment")
		}
		for j, s := range r.Segments {
			sp := fmt.Sprintf("%s.recurrent.segments[%d]", p, j)
			if s.Name == "" {
				return fieldErr(sp+".name", "empty")
			}
			if err := positive(sp+".units", s.Units); err != nil {
				return err
			}
			if err := positive(sp+".unit_width", s.UnitWidth); err != nil {
				return err
			}
		}
		for j, s := range r.States {
			sp := fmt.Sprintf("%s.recurrent.states[%d]", p, j)
			if s.Name == "" {
				return fieldErr(sp+".name", "empty")
			}
			if err := positive(sp+".heads", s.Heads); err != nil {
				return err
			}
			if len(s.Dims) == 0 {
				return fieldErr(sp+".dims", "empty")
			}
			for k, d := range s.Dims {
				if err := positive(fmt.Sprintf("%s.dims[%d]", sp, k), d); err != nil {
					return err
				}
			}
			if err := validDType(sp+".dtype", s.DType); err != nil {
				return err
			}
		}
	default:
		return fieldErr(p+".kind", fmt.Sprintf("invalid kind %q", l.Kind))
	}
	if l.Kind.PerToken() != (l.Recurrent == nil) {
		return fieldErr(p, "kind and payload disagree")
	}
	if (l.Kind == MLA) != (l.MLA != nil) || (l.Kind == Indexer) != (l.Indexer != nil) {
		return fieldErr(p, "kind and payload disagree")
	}
	return nil
}
