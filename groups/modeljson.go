package groups

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
)

// Our JSON model format, documented in docs/model-spec.md. A document names
// each distinct layer spec once under "layer_specs" and lists the decoder
// layers by spec name, so a 60-layer model stays short:
//
//	{
//	  "format": "hybridxfer.model/v1",
//	  "name": "tiny",
//	  "num_speculative_tokens": 0,
//	  "layer_specs": {
//	    "attn": {"kind": "full_attention", "attention": {"kv_heads": 4, "head_dim": 256, "dtype": "bf16"}},
//	    "gdn": {"kind": "recurrent", "recurrent": {...}}
//	  },
//	  "layers": ["gdn", "gdn", "gdn", "attn"]
//	}
//
// Decoding is strict: unknown fields, duplicated keys, nulls, wrong types,
// trailing data and inconsistent values are errors naming the field.

// ModelFormat is the value of the "format" key of the current version.
const ModelFormat = "hybridxfer.model/v1"

// Limits of the JSON format (and of imported configs), so that no input can
// make the per-rank arithmetic of this package overflow.
const (
	MaxModelJSONBytes = 16 << 20 // input size
	MaxLayers         = 4096     // cache layers, target and draft together
	MaxKVHeads        = 1 << 16  // attention kv_heads
	MaxDim            = 1 << 20  // head dims, latent/rope dims, segment units and widths, state heads and dims
	MaxWindow         = 1 << 30  // sliding window and chunk, in tokens
	MaxConvKernel     = 1 << 10
	MaxLayerBytes     = 1 << 40 // per token (per-token kinds) or per request (recurrent), at tp 1 and 64 speculative tokens

	maxEntries      = 2 * MaxLayers // entries of "layers", and of "draft_layers"
	maxSegments     = 64
	maxStates       = 16
	maxStateDims    = 8
	maxLayerCaches  = 16 // spec names in one array entry
	maxNameBytes    = 256
	maxSpecNameSize = 64
	maxNumSpecToks  = 64
)

// NoCache is the entry of "layers" for a decoder layer without cache (an
// MLP or MoE layer of a hybrid): it only advances the decoder index used in
// generated layer names.
const NoCache = "-"

// ParseModelJSON decodes a model in our JSON format and validates it. Every
// error wraps ErrInvalidSpec (ErrUnsupported for another format version)
// and, where a field is at fault, is a *FieldError naming it by its JSON
// path (e.g. "layer_specs.gdn.recurrent.segments[2].units", "layers[7]").
func ParseModelJSON(data []byte) (*Model, error) {
	raw, err := decodeJSONDocument(data, MaxModelJSONBytes, "model JSON")
	if err != nil {
		return nil, err
	}
	root, err := decodeJSONObj(raw, "", false)
	if err != nil {
		return nil, err
	}
	return parseModelObj(root)
}

func parseModelObj(root *jsonObj) (*Model, error) {
	if err := root.only("format", "name", "architecture", "num_speculative_tokens", "draft", "layer_specs", "layers", "draft_layers"); err != nil {
		return nil, err
	}
	format, ok, err := root.str("format")
	if err != nil {
		return nil, err
	}
	switch {
	case !ok:
		return nil, fieldErr("format", fmt.Sprintf("required (%q)", ModelFormat))
	case format == ModelFormat:
	case strings.HasPrefix(format, "hybridxfer.model/"):
		return nil, &FieldError{Field: "format", Msg: fmt.Sprintf("version %q is not supported (want %q)", format, ModelFormat), Err: ErrUnsupported}
	default:
		return nil, fieldErr("format", fmt.Sprintf("%q is not a hybridxfer model (want %q)", format, ModelFormat))
	}
	m := &Model{}
	if m.Name, ok, err = root.str("name"); err != nil {
		return nil, err
	} else if !ok {
		return nil, fieldErr("name", "required")
	}
	if err := checkName("name", m.Name, maxNameBytes); err != nil {
		return nil, err
	}
	if m.Architecture, _, err = root.str("architecture"); err != nil {
		return nil, err
	}
	if err := checkName("architecture", m.Architecture, maxNameBytes); err != nil {
		return nil, err
	}
	if m.NumSpeculativeTokens, _, err = root.integer("num_speculative_tokens"); err != nil {
		return nil, err
	}
	if n := m.NumSpeculativeTokens; n < 0 || n > maxNumSpecToks {
		return nil, fieldErr("num_speculative_tokens", fmt.Sprintf("%d out of range [0, %d]", n, maxNumSpecToks))
	}
	draft, _, err := root.str("draft")
	if err != nil {
		return nil, err
	}
	m.Draft = DraftKind(draft)
	switch m.Draft {
	case DraftNone, DraftMTP, DraftEagle3:
	default:
		return nil, fieldErr("draft", fmt.Sprintf("unknown draft kind %q (want \"\", %q or %q)", draft, DraftMTP, DraftEagle3))
	}

	specsObj, ok, err := root.object("layer_specs")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fieldErr("layer_specs", "required")
	}
	if len(specsObj.keys) == 0 {
		return nil, fieldErr("layer_specs", "no specs")
	}
	if len(specsObj.keys) > MaxLayers {
		return nil, fieldErr("layer_specs", fmt.Sprintf("more than %d specs", MaxLayers))
	}
	specs := make(map[string]*Layer, len(specsObj.keys))
	for _, name := range specsObj.keys {
		p := specsObj.field(name)
		if err := checkSpecName(p, name); err != nil {
			return nil, err
		}
		l, err := decodeSpec(specsObj.vals[name], p)
		if err != nil {
			return nil, err
		}
		specs[name] = l
	}

	p := &entryParser{specs: specs, used: map[string]bool{}, names: map[string]string{}, m: m}
	entries, ok, err := root.array("layers", maxEntries)
	if err != nil {
		return nil, err
	}
	if !ok || len(entries) == 0 {
		return nil, fieldErr("layers", "required, at least one entry")
	}
	if err := p.parse(entries, "layers", "layers", false); err != nil {
		return nil, err
	}
	if len(m.Layers) == 0 {
		return nil, fieldErr("layers", "no cache layers (every entry is \"-\")")
	}
	drafts, hasDrafts, err := root.array("draft_layers", maxEntries)
	if err != nil {
		return nil, err
	}
	if hasDrafts && len(drafts) > 0 && m.Draft == DraftNone {
		return nil, fieldErr("draft", "required when draft_layers is not empty (\"mtp\" or \"eagle3\")")
	}
	if m.Draft != DraftNone {
		if len(drafts) == 0 {
			return nil, fieldErr("draft_layers", fmt.Sprintf("draft is %q but there are no draft layers", m.Draft))
		}
		targets := len(m.Layers)
		if err := p.parse(drafts, "draft_layers", draftPrefix(m.Draft), true); err != nil {
			return nil, err
		}
		if len(m.Layers) == targets {
			return nil, fieldErr("draft_layers", "no cache layers (every entry is \"-\")")
		}
	}
	for _, name := range specsObj.keys {
		if !p.used[name] {
			return nil, fieldErr(specsObj.field(name), "defined but not used by any layer")
		}
	}
	if err := checkModelLimits(m); err != nil {
		return nil, err
	}
	return m, nil
}

// draftPrefix is the prefix of generated draft layer names.
func draftPrefix(k DraftKind) string {
	if k == DraftMTP {
		return "mtp"
	}
	return "draft"
}

// checkSpecName: spec names are short identifiers ([A-Za-z0-9_.-], not "-")
// so that generated layer names stay readable.
func checkSpecName(field, s string) error {
	if s == "" || len(s) > maxSpecNameSize {
		return fieldErr(field, fmt.Sprintf("spec name must have 1 to %d characters", maxSpecNameSize))
	}
	if s == NoCache {
		return fieldErr(field, `spec name "-" is reserved for decoder layers without cache`)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return fieldErr(field, fmt.Sprintf("spec name %q: only letters, digits, '_', '.' and '-' allowed", s))
		}
	}
	return nil
}

type entryParser struct {
	specs map[string]*Layer
	used  map[string]bool
	names map[string]string // layer name -> path of the entry that made it
	m     *Model
	start int // first layer of the array being parsed
}

// parse appends the layers of entries. Each entry is one decoder layer d
// (counting from 0 in this array): "-" (no cache), a spec name (one layer
// named prefix.d.spec), an array of spec names (one layer per name) or an
// object {"name", "spec", "parallel"?} (one layer with an explicit name).
// The layers of an array after the first, and an object's layer with
// "parallel": true, run in parallel with the layer before them (one decoder
// layer with several caches).
func (p *entryParser) parse(entries []json.RawMessage, path, prefix string, draft bool) error {
	p.start = len(p.m.Layers)
	add := func(field, name, spec string, parallel bool) error {
		l, ok := p.specs[spec]
		if !ok {
			return fieldErr(field, fmt.Sprintf("unknown layer spec %q", spec))
		}
		if draft && l.Kind == Recurrent {
			return fieldErr(field, fmt.Sprintf("spec %q is recurrent; draft layers cannot be recurrent", spec))
		}
		if prev, dup := p.names[name]; dup {
			return fieldErr(field, fmt.Sprintf("layer name %q already used by %s", name, prev))
		}
		if len(p.m.Layers) >= MaxLayers {
			return fieldErr(field, fmt.Sprintf("more than %d cache layers", MaxLayers))
		}
		p.names[name] = field
		p.used[spec] = true
		nl := l.clone()
		nl.Name, nl.Draft, nl.Parallel = name, draft, parallel
		p.m.Layers = append(p.m.Layers, nl)
		return nil
	}
	gen := func(d int, spec string) string { return prefix + "." + strconv.Itoa(d) + "." + spec }
	for d, raw := range entries {
		field := jsonIndex(path, d)
		switch jsonKind(raw) {
		case "a string":
			s, err := jsonStringValue(raw, field)
			if err != nil {
				return err
			}
			if s == NoCache {
				continue
			}
			if err := add(field, gen(d, s), s, false); err != nil {
				return err
			}
		case "an array":
			elems, err := jsonArrayValue(raw, field, maxLayerCaches)
			if err != nil {
				return err
			}
			if len(elems) == 0 {
				return fieldErr(field, `empty array (write "-" for a decoder layer without cache)`)
			}
			for j, e := range elems {
				ef := jsonIndex(field, j)
				s, err := jsonStringValue(e, ef)
				if err != nil {
					return err
				}
				if s == NoCache {
					return fieldErr(ef, `"-" is not allowed inside an array`)
				}
				if err := add(ef, gen(d, s), s, j > 0); err != nil {
					return err
				}
			}
		case "an object":
			o, err := decodeJSONObj(raw, field, false)
			if err != nil {
				return err
			}
			if err := o.only("name", "spec", "parallel"); err != nil {
				return err
			}
			name, ok, err := o.str("name")
			if err != nil {
				return err
			}
			if !ok || name == "" {
				return fieldErr(o.field("name"), "required, not empty")
			}
			if err := checkName(o.field("name"), name, maxNameBytes); err != nil {
				return err
			}
			spec, ok, err := o.str("spec")
			if err != nil {
				return err
			}
			if !ok {
				return fieldErr(o.field("spec"), "required")
			}
			parallel, _, err := o.boolean("parallel")
			if err != nil {
				return err
			}
			if parallel && len(p.m.Layers) == p.start {
				return fieldErr(o.field("parallel"), "the first layer has no layer before it to run in parallel with")
			}
			if err := add(o.field("spec"), name, spec, parallel); err != nil {
				return err
			}
		default:
			return fieldErr(field, "must be a spec name, an array of spec names or an object {\"name\", \"spec\"}, got "+jsonKind(raw))
		}
	}
	return nil
}

// decodeSpec decodes one layer spec (a Layer without name and draft flag),
// validates it and checks the limits, naming fields under path.
func decodeSpec(raw json.RawMessage, path string) (*Layer, error) {
	o, err := decodeJSONObj(raw, path, false)
	if err != nil {
		return nil, err
	}
	if err := o.only("kind", "attention", "mla", "indexer", "recurrent"); err != nil {
		return nil, err
	}
	ks, ok, err := o.str("kind")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fieldErr(o.field("kind"), "required")
	}
	l := &Layer{}
	if l.Kind, err = ParseKind(ks); err != nil {
		return nil, fieldErr(o.field("kind"), fmt.Sprintf("unknown layer kind %q (want one of %s)", ks, strings.Join(kindNames[1:], ", ")))
	}
	if a, ok, err := o.object("attention"); err != nil {
		return nil, err
	} else if ok {
		if l.Attention, err = decodeAttention(a); err != nil {
			return nil, err
		}
	}
	if a, ok, err := o.object("mla"); err != nil {
		return nil, err
	} else if ok {
		if l.MLA, err = decodeMLA(a); err != nil {
			return nil, err
		}
	}
	if a, ok, err := o.object("indexer"); err != nil {
		return nil, err
	} else if ok {
		if err := a.only("head_dim"); err != nil {
			return nil, err
		}
		l.Indexer = &IndexerSpec{}
		if l.Indexer.HeadDim, _, err = a.integer("head_dim"); err != nil {
			return nil, err
		}
	}
	if a, ok, err := o.object("recurrent"); err != nil {
		return nil, err
	} else if ok {
		if l.Recurrent, err = decodeRecurrent(a); err != nil {
			return nil, err
		}
	}
	if err := l.validate(path); err != nil {
		return nil, err
	}
	if err := checkLayerLimits(l, path); err != nil {
		return nil, err
	}
	return l, nil
}

func decodeDType(o *jsonObj, key string) (DType, error) {
	s, ok, err := o.str(key)
	if err != nil || !ok {
		return DTypeInvalid, err // a missing dtype is reported by validate
	}
	d, err := ParseDType(s)
	if err != nil {
		return DTypeInvalid, fieldErr(o.field(key), fmt.Sprintf("unknown dtype %q", s))
	}
	return d, nil
}

// intFields decodes integer members into targets, in order.
func intFields(o *jsonObj, keys []string, targets ...*int) error {
	for i, k := range keys {
		v, _, err := o.integer(k)
		if err != nil {
			return err
		}
		*targets[i] = v
	}
	return nil
}

func decodeAttention(o *jsonObj) (*Attention, error) {
	if err := o.only("kv_heads", "q_heads", "head_dim", "head_dim_v", "dtype", "scales", "window", "chunk"); err != nil {
		return nil, err
	}
	a := &Attention{}
	if err := intFields(o, []string{"kv_heads", "q_heads", "head_dim", "head_dim_v", "window", "chunk"},
		&a.KVHeads, &a.QHeads, &a.HeadDim, &a.HeadDimV, &a.Window, &a.Chunk); err != nil {
		return nil, err
	}
	var err error
	if a.DType, err = decodeDType(o, "dtype"); err != nil {
		return nil, err
	}
	if a.Scales, _, err = o.boolean("scales"); err != nil {
		return nil, err
	}
	return a, nil
}

func decodeMLA(o *jsonObj) (*MLASpec, error) {
	if err := o.only("latent_dim", "rope_dim", "dtype", "format"); err != nil {
		return nil, err
	}
	m := &MLASpec{}
	if err := intFields(o, []string{"latent_dim", "rope_dim"}, &m.LatentDim, &m.RopeDim); err != nil {
		return nil, err
	}
	var err error
	if m.DType, err = decodeDType(o, "dtype"); err != nil {
		return nil, err
	}
	f, _, err := o.str("format")
	if err != nil {
		return nil, err
	}
	m.Format = MLAFormat(f)
	return m, nil
}

func decodeRecurrent(o *jsonObj) (*RecurrentSpec, error) {
	if err := o.only("type", "conv_kernel", "conv_dtype", "segments", "states"); err != nil {
		return nil, err
	}
	r := &RecurrentSpec{}
	t, _, err := o.str("type")
	if err != nil {
		return nil, err
	}
	r.Type = RecurrentType(t)
	if r.ConvKernel, _, err = o.integer("conv_kernel"); err != nil {
		return nil, err
	}
	if r.ConvDType, err = decodeDType(o, "conv_dtype"); err != nil {
		return nil, err
	}
	segs, _, err := o.array("segments", maxSegments)
	if err != nil {
		return nil, err
	}
	for i, raw := range segs {
		so, err := decodeJSONObj(raw, jsonIndex(o.field("segments"), i), false)
		if err != nil {
			return nil, err
		}
		if err := so.only("name", "units", "unit_width", "replicate"); err != nil {
			return nil, err
		}
		var s Segment
		if s.Name, _, err = so.str("name"); err != nil {
			return nil, err
		}
		if err := intFields(so, []string{"units", "unit_width"}, &s.Units, &s.UnitWidth); err != nil {
			return nil, err
		}
		if s.Replicate, _, err = so.boolean("replicate"); err != nil {
			return nil, err
		}
		r.Segments = append(r.Segments, s)
	}
	states, _, err := o.array("states", maxStates)
	if err != nil {
		return nil, err
	}
	for i, raw := range states {
		so, err := decodeJSONObj(raw, jsonIndex(o.field("states"), i), false)
		if err != nil {
			return nil, err
		}
		if err := so.only("name", "heads", "dims", "dtype"); err != nil {
			return nil, err
		}
		var s State
		if s.Name, _, err = so.str("name"); err != nil {
			return nil, err
		}
		if s.Heads, _, err = so.integer("heads"); err != nil {
			return nil, err
		}
		dims, _, err := so.array("dims", maxStateDims)
		if err != nil {
			return nil, err
		}
		for j, d := range dims {
			v, err := jsonIntValue(d, jsonIndex(so.field("dims"), j))
			if err != nil {
				return nil, err
			}
			s.Dims = append(s.Dims, v)
		}
		if s.DType, err = decodeDType(so, "dtype"); err != nil {
			return nil, err
		}
		r.States = append(r.States, s)
	}
	return r, nil
}

// checkModelLimits validates m and checks the limits of the format: what
// MarshalModelJSON accepts is exactly what ParseModelJSON returns.
func checkModelLimits(m *Model) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if err := checkName("name", m.Name, maxNameBytes); err != nil {
		return err
	}
	if err := checkName("architecture", m.Architecture, maxNameBytes); err != nil {
		return err
	}
	if len(m.Layers) > MaxLayers {
		return fieldErr("layers", fmt.Sprintf("%d cache layers, more than %d", len(m.Layers), MaxLayers))
	}
	for i := range m.Layers {
		p := jsonIndex("layers", i)
		if err := checkName(p+".name", m.Layers[i].Name, maxNameBytes); err != nil {
			return err
		}
		if err := checkLayerLimits(&m.Layers[i], p); err != nil {
			return err
		}
	}
	return nil
}

// mulCap multiplies non-negative a and b, reporting false when the result
// exceeds limit (or overflows).
func mulCap(a, b, limit uint64) (uint64, bool) {
	hi, lo := bits.Mul64(a, b)
	return lo, hi == 0 && lo <= limit
}

func limit(field string, v, max int) error {
	if v > max {
		return fieldErr(field, fmt.Sprintf("%d exceeds the limit %d", v, max))
	}
	return nil
}

// checkLayerLimits checks a validated layer against the format's limits:
// sizes capped, and its bytes per token (or per request, recurrent) at tp 1
// with the largest speculative token count at most MaxLayerBytes.
func checkLayerLimits(l *Layer, p string) error {
	const lim = uint64(min(MaxLayerBytes, math.MaxInt))
	tooBig := func(field string) error {
		return fieldErr(field, fmt.Sprintf("state larger than %d bytes", uint64(lim)))
	}
	switch {
	case l.Attention != nil:
		a := l.Attention
		for _, c := range []struct {
			f   string
			v   int
			max int
		}{{"kv_heads", a.KVHeads, MaxKVHeads}, {"q_heads", a.QHeads, MaxKVHeads}, {"head_dim", a.HeadDim, MaxDim}, {"head_dim_v", a.HeadDimV, MaxDim}, {"window", a.Window, MaxWindow}, {"chunk", a.Chunk, MaxWindow}} {
			if err := limit(p+".attention."+c.f, c.v, c.max); err != nil {
				return err
			}
		}
	case l.MLA != nil:
		if err := limit(p+".mla.latent_dim", l.MLA.LatentDim, MaxDim); err != nil {
			return err
		}
		if err := limit(p+".mla.rope_dim", l.MLA.RopeDim, MaxDim); err != nil {
			return err
		}
	case l.Indexer != nil:
		if err := limit(p+".indexer.head_dim", l.Indexer.HeadDim, MaxDim); err != nil {
			return err
		}
	case l.Recurrent != nil:
		r := l.Recurrent
		rp := p + ".recurrent"
		if err := limit(rp+".conv_kernel", r.ConvKernel, MaxConvKernel); err != nil {
			return err
		}
		if len(r.Segments) > maxSegments {
			return fieldErr(rp+".segments", fmt.Sprintf("more than %d segments", maxSegments))
		}
		if len(r.States) > maxStates {
			return fieldErr(rp+".states", fmt.Sprintf("more than %d states", maxStates))
		}
		seen := map[string]bool{}
		var channels uint64
		for j, s := range r.Segments {
			sp := jsonIndex(rp+".segments", j)
			if err := checkName(sp+".name", s.Name, maxSpecNameSize); err != nil {
				return err
			}
			if seen[s.Name] {
				return fieldErr(sp+".name", fmt.Sprintf("duplicated segment name %q", s.Name))
			}
			seen[s.Name] = true
			if err := limit(sp+".units", s.Units, MaxDim); err != nil {
				return err
			}
			if err := limit(sp+".unit_width", s.UnitWidth, MaxDim); err != nil {
				return err
			}
			channels += uint64(s.Units) * uint64(s.UnitWidth) // <= 64 * 2^40
		}
		rows := uint64(r.ConvKernel - 1 + maxNumSpecToks)
		v, ok := mulCap(channels, rows*uint64(r.ConvDType.Size()), lim)
		if !ok {
			return tooBig(rp + ".segments")
		}
		total := v
		clear(seen)
		for j, s := range r.States {
			sp := jsonIndex(rp+".states", j)
			if err := checkName(sp+".name", s.Name, maxSpecNameSize); err != nil {
				return err
			}
			if seen[s.Name] {
				return fieldErr(sp+".name", fmt.Sprintf("duplicated state name %q", s.Name))
			}
			seen[s.Name] = true
			if err := limit(sp+".heads", s.Heads, MaxDim); err != nil {
				return err
			}
			if len(s.Dims) > maxStateDims {
				return fieldErr(sp+".dims", fmt.Sprintf("more than %d dims", maxStateDims))
			}
			b := uint64(s.Heads) * uint64(s.DType.Size())
			for k, d := range s.Dims {
				if err := limit(jsonIndex(sp+".dims", k), d, MaxDim); err != nil {
					return err
				}
				if b, ok = mulCap(b, uint64(d), lim); !ok {
					return tooBig(sp)
				}
			}
			if total += b; total > lim {
				return tooBig(sp)
			}
		}
	}
	// Per-token kinds: with the caps above, at most 2^16 heads x 2^21 values
	// x 4 bytes (+ scales) = 2^39 bytes per token, within lim.
	return nil
}

// MarshalModelJSON encodes m in our JSON format: indented, stable (the same
// model always gives the same bytes), identical layer specs written once
// under "layer_specs". It refuses a model that Validate or the format's
// limits refuse, so ParseModelJSON(MarshalModelJSON(m)) always succeeds and
// deep-equals m.
func MarshalModelJSON(m *Model) ([]byte, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: nil model", ErrInvalidSpec)
	}
	if err := checkModelLimits(m); err != nil {
		return nil, err
	}
	keys := make([]string, len(m.Layers))
	var order []string // distinct spec keys in order of first use
	byKey := map[string]specOut{}
	for i := range m.Layers {
		so := toSpecOut(&m.Layers[i])
		b, err := json.Marshal(so)
		if err != nil {
			return nil, fmt.Errorf("%w: layers[%d]: %v", ErrInvalidSpec, i, err)
		}
		keys[i] = string(b)
		if _, ok := byKey[keys[i]]; !ok {
			byKey[keys[i]] = so
			order = append(order, keys[i])
		}
	}
	names := nameSpecs(m, keys, order)

	var buf bytes.Buffer
	buf.WriteString("{\n")
	fmt.Fprintf(&buf, "  \"format\": %s,\n", jsonQuote(ModelFormat))
	fmt.Fprintf(&buf, "  \"name\": %s,\n", jsonQuote(m.Name))
	if m.Architecture != "" {
		fmt.Fprintf(&buf, "  \"architecture\": %s,\n", jsonQuote(m.Architecture))
	}
	fmt.Fprintf(&buf, "  \"num_speculative_tokens\": %d,\n", m.NumSpeculativeTokens)
	if m.Draft != DraftNone {
		fmt.Fprintf(&buf, "  \"draft\": %s,\n", jsonQuote(string(m.Draft)))
	}
	buf.WriteString("  \"layer_specs\": {\n")
	for i, k := range order {
		fmt.Fprintf(&buf, "    %s: ", jsonQuote(names[k]))
		if err := writeSpec(&buf, byKey[k]); err != nil {
			return nil, err
		}
		if i < len(order)-1 {
			buf.WriteByte(',')
		}
		buf.WriteByte('\n')
	}
	buf.WriteString("  }")
	ntarget := 0
	for ntarget < len(m.Layers) && !m.Layers[ntarget].Draft {
		ntarget++
	}
	writeEntries(&buf, "layers", layerEntries(m.Layers[:ntarget], keys[:ntarget], names, "layers"))
	if ntarget < len(m.Layers) {
		writeEntries(&buf, "draft_layers", layerEntries(m.Layers[ntarget:], keys[ntarget:], names, draftPrefix(m.Draft)))
	}
	buf.WriteString("\n}\n")
	return buf.Bytes(), nil
}

// splitLayerName splits "prefix.<n>.<suffix>" with n in canonical decimal.
func splitLayerName(name, prefix string) (int, string, bool) {
	rest, ok := strings.CutPrefix(name, prefix+".")
	if !ok {
		return 0, "", false
	}
	num, suffix, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, "", false
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 || strconv.Itoa(n) != num {
		return 0, "", false
	}
	return n, suffix, true
}

// nameSpecs picks a name per distinct spec: the suffix its layers' names
// already use ("layers.3.attn" -> "attn") when no other spec claims it, so
// that most layers get the short form; otherwise the kind (or recurrent
// type), made unique.
func nameSpecs(m *Model, keys, order []string) map[string]string {
	votes := map[string]map[string]int{}
	first := map[string][]string{} // candidates in order of first appearance
	for i := range m.Layers {
		prefix := "layers"
		if m.Layers[i].Draft {
			prefix = draftPrefix(m.Draft)
		}
		_, suf, ok := splitLayerName(m.Layers[i].Name, prefix)
		if !ok || checkSpecName("", suf) != nil {
			continue
		}
		k := keys[i]
		if votes[k] == nil {
			votes[k] = map[string]int{}
		}
		if votes[k][suf] == 0 {
			first[k] = append(first[k], suf)
		}
		votes[k][suf]++
	}
	// Contested suffixes go to the spec with the most layers using them.
	type claim struct {
		key, name string
		votes     int
	}
	var claims []claim
	for _, k := range order {
		for _, c := range first[k] {
			claims = append(claims, claim{k, c, votes[k][c]})
		}
	}
	slices.SortStableFunc(claims, func(a, b claim) int { return b.votes - a.votes })
	names := map[string]string{}
	taken := map[string]bool{}
	for _, c := range claims {
		if _, done := names[c.key]; !done && !taken[c.name] {
			names[c.key], taken[c.name] = c.name, true
		}
	}
	// Fallbacks must not steal a name another spec's layers use.
	reserved := map[string]bool{}
	for _, cs := range first {
		for _, c := range cs {
			reserved[c] = true
		}
	}
	for i := range m.Layers {
		k := keys[i]
		if _, ok := names[k]; ok {
			continue
		}
		l := &m.Layers[i]
		base := l.Kind.String()
		if l.Recurrent != nil && checkSpecName("", string(l.Recurrent.Type)) == nil {
			base = string(l.Recurrent.Type)
		}
		n := base
		for j := 2; taken[n] || reserved[n]; j++ {
			n = base + "_" + strconv.Itoa(j)
		}
		names[k], taken[n] = n, true
	}
	return names
}

// layerEntries encodes layers (all target or all draft) as entries.
func layerEntries(ls []Layer, keys []string, names map[string]string, prefix string) []string {
	var out []string
	d := 0
	for k := 0; k < len(ls); {
		n, suf, ok := splitLayerName(ls[k].Name, prefix)
		if ok && suf == names[keys[k]] && n >= d && n < MaxLayers && !ls[k].Parallel {
			for ; d < n; d++ {
				out = append(out, jsonQuote(NoCache))
			}
			group := []string{jsonQuote(suf)}
			for k++; k < len(ls) && len(group) < maxLayerCaches; k++ {
				n2, suf2, ok := splitLayerName(ls[k].Name, prefix)
				if !ok || n2 != n || suf2 != names[keys[k]] || !ls[k].Parallel {
					break
				}
				group = append(group, jsonQuote(suf2))
			}
			if len(group) == 1 {
				out = append(out, group[0])
			} else {
				out = append(out, "["+strings.Join(group, ", ")+"]")
			}
			d = n + 1
			continue
		}
		par := ""
		if ls[k].Parallel {
			par = ", \"parallel\": true"
		}
		out = append(out, fmt.Sprintf("{\"name\": %s, \"spec\": %s%s}", jsonQuote(ls[k].Name), jsonQuote(names[keys[k]]), par))
		d++
		k++
	}
	return out
}

// writeEntries writes `,\n  "key": [ ... ]` with the entries wrapped at
// about 100 columns.
func writeEntries(buf *bytes.Buffer, key string, entries []string) {
	fmt.Fprintf(buf, ",\n  %s: [", jsonQuote(key))
	col := 100
	for i, e := range entries {
		if col+len(e)+2 > 100 {
			buf.WriteString("\n    ")
			col = 4
		} else {
			buf.WriteByte(' ')
			col++
		}
		buf.WriteString(e)
		col += len(e)
		if i < len(entries)-1 {
			buf.WriteByte(',')
			col++
		}
	}
	buf.WriteString("\n  ]")
}

// writeSpec writes a spec: per-token kinds on one line, recurrent specs
// with one line per field, segment and state.
func writeSpec(buf *bytes.Buffer, s specOut) error {
	if s.Recurrent == nil {
		return writeCompact(buf, s)
	}
	r := s.Recurrent
	fmt.Fprintf(buf, "{\n      \"kind\": %s,\n      \"recurrent\": {\n", jsonQuote(s.Kind))
	fmt.Fprintf(buf, "        \"type\": %s,\n        \"conv_kernel\": %d,\n        \"conv_dtype\": %s,\n",
		jsonQuote(r.Type), r.ConvKernel, jsonQuote(r.ConvDType))
	buf.WriteString("        \"segments\": [")
	for i, sg := range r.Segments {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString("\n          ")
		if err := writeCompact(buf, sg); err != nil {
			return err
		}
	}
	buf.WriteString("\n        ]")
	if len(r.States) > 0 {
		buf.WriteString(",\n        \"states\": [")
		for i, st := range r.States {
			if i > 0 {
				buf.WriteByte(',')
			}
			buf.WriteString("\n          ")
			if err := writeCompact(buf, st); err != nil {
				return err
			}
		}
		buf.WriteString("\n        ]")
	}
	buf.WriteString("\n      }\n    }")
	return nil
}

// writeCompact writes v as one-line JSON with a space after ':' and ','.
func writeCompact(buf *bytes.Buffer, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidSpec, err)
	}
	inString, escaped := false, false
	for _, c := range bytes.TrimSuffix(b.Bytes(), []byte("\n")) {
		buf.WriteByte(c)
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case !inString && (c == ':' || c == ','):
			buf.WriteByte(' ')
		}
	}
	return nil
}

func jsonQuote(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(b.String(), "\n")
}

// The output structs of the format. They mirror the spec types but are kept
// separate so that the format changes only on purpose.
type specOut struct {
	Kind      string        `json:"kind"`
	Attention *attentionOut `json:"attention,omitempty"`
	MLA       *mlaOut       `json:"mla,omitempty"`
	Indexer   *indexerOut   `json:"indexer,omitempty"`
	Recurrent *recurrentOut `json:"recurrent,omitempty"`
}

type attentionOut struct {
	KVHeads  int    `json:"kv_heads"`
	QHeads   int    `json:"q_heads,omitempty"`
	HeadDim  int    `json:"head_dim"`
	HeadDimV int    `json:"head_dim_v,omitempty"`
	DType    string `json:"dtype"`
	Scales   bool   `json:"scales,omitempty"`
	Window   int    `json:"window,omitempty"`
	Chunk    int    `json:"chunk,omitempty"`
}

type mlaOut struct {
	LatentDim int    `json:"latent_dim"`
	RopeDim   int    `json:"rope_dim"`
	DType     string `json:"dtype"`
	Format    string `json:"format,omitempty"`
}

type indexerOut struct {
	HeadDim int `json:"head_dim"`
}

type recurrentOut struct {
	Type       string       `json:"type"`
	ConvKernel int          `json:"conv_kernel"`
	ConvDType  string       `json:"conv_dtype"`
	Segments   []segmentOut `json:"segments"`
	States     []stateOut   `json:"states,omitempty"`
}

type segmentOut struct {
	Name      string `json:"name"`
	Units     int    `json:"units"`
	UnitWidth int    `json:"unit_width"`
	Replicate bool   `json:"replicate,omitempty"`
}

type stateOut struct {
	Name  string `json:"name"`
	Heads int    `json:"heads"`
	Dims  []int  `json:"dims"`
	DType string `json:"dtype"`
}

func toSpecOut(l *Layer) specOut {
	s := specOut{Kind: l.Kind.String()}
	if a := l.Attention; a != nil {
		s.Attention = &attentionOut{KVHeads: a.KVHeads, QHeads: a.QHeads, HeadDim: a.HeadDim, HeadDimV: a.HeadDimV, DType: a.DType.String(),
			Scales: a.Scales, Window: a.Window, Chunk: a.Chunk}
	}
	if x := l.MLA; x != nil {
		s.MLA = &mlaOut{LatentDim: x.LatentDim, RopeDim: x.RopeDim, DType: x.DType.String(), Format: string(x.Format)}
	}
	if x := l.Indexer; x != nil {
		s.Indexer = &indexerOut{HeadDim: x.HeadDim}
	}
	if r := l.Recurrent; r != nil {
		ro := &recurrentOut{Type: string(r.Type), ConvKernel: r.ConvKernel, ConvDType: r.ConvDType.String()}
		for _, sg := range r.Segments {
			ro.Segments = append(ro.Segments, segmentOut(sg))
		}
		for _, st := range r.States {
			ro.States = append(ro.States, stateOut{Name: st.Name, Heads: st.Heads, Dims: st.Dims, DType: st.DType.String()})
		}
		s.Recurrent = ro
	}
	return s
}
