package groups

import (
	"encoding/json"
	"sort"
)

// KVGroup is a set of layers that share one block table: layers of equal
// spec, dealt round-robin the way vLLM's hybrid allocator does it so every
// group has about the same number of layers (one per memory slot).
type KVGroup struct {
	ID     int
	Kind   Kind
	Layers []int // model layer indexes; position in this slice is the layer's slot
	// Eagle is set when the group holds draft (MTP/Eagle) layers: the
	// allocator then drops the last block of a prefix hit.
	Eagle bool
}

// specKey is a canonical encoding of everything in a layer that must be
// equal for two layers to share a group: the kind and the payload, not the
// name nor the draft flag.
func specKey(l *Layer) string {
	b, _ := json.Marshal(struct {
		K Kind
		A *Attention     `json:",omitempty"`
		M *MLASpec       `json:",omitempty"`
		I *IndexerSpec   `json:",omitempty"`
		R *RecurrentSpec `json:",omitempty"`
	}{l.Kind, l.Attention, l.MLA, l.Indexer, l.Recurrent})
	return string(b)
}

// KVGroups partitions m's layers into KV cache groups:
//  1. bucket layers by spec (draft layers join the bucket of an equal target
//     spec; a draft spec with no equal target forms its own bucket);
//  2. group size = the smallest target bucket, or the largest when the
//     largest is under 1.5x the smallest (vLLM's rule: a draft adding a
//     layer to one kind must not halve the group size);
//  3. each bucket splits into ceil(n/size) groups, layers dealt round-robin.
//
// Buckets are ordered by first layer; the result is deterministic.
func (m *Model) KVGroups() []KVGroup {
	type bucket struct {
		key    string
		layers []int
		target int // target (non-draft) layers
		draft  bool
	}
	var buckets []*bucket
	byKey := map[string]*bucket{}
	for i := range m.Layers {
		l := &m.Layers[i]
		k := specKey(l)
		b := byKey[k]
		if b == nil {
			b = &bucket{key: k}
			byKey[k] = b
			buckets = append(buckets, b)
		}
		b.layers = append(b.layers, i)
		if l.Draft {
			b.draft = true
		} else {
			b.target++
		}
	}
	minN, maxN := 0, 0
	for _, b := range buckets {
		if b.target == 0 {
			continue // draft-only bucket: a separate group, not counted
		}
		n := len(b.layers)
		if minN == 0 || n < minN {
			minN = n
		}
		maxN = max(maxN, n)
	}
	size := minN
	if 2*maxN < 3*minN {
		size = maxN
	}
	var out []KVGroup
	for _, b := range buckets {
		n := len(b.layers)
		ng := 1
		if b.target > 0 {
			ng = (n + size - 1) / size
		}
		for g := 0; g < ng; g++ {
			kg := KVGroup{ID: len(out), Kind: m.Layers[b.layers[0]].Kind}
			for j := g; j < n; j += ng {
				li := b.layers[j]
				kg.Layers = append(kg.Layers, li)
				kg.Eagle = kg.Eagle || m.Layers[li].Draft
			}
			out = append(out, kg)
		}
	}
	// Stable order: by first layer index.
	sort.SliceStable(out, func(i, j int) bool { return out[i].Layers[0] < out[j].Layers[0] })
	for i := range out {
		out[i].ID = i
	}
	return out
}
