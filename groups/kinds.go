package groups

import "fmt"

// The per-kind rules every other package uses: which tokens a layer still
// needs, which kinds keep per-token state, which recurrent families exist.
// They live here and nowhere else; a new Kind or RecurrentType is added to
// the tables below, and the tests of the packages that switch on kinds
// (hma, plan, verify, refmodel, proptest) iterate Kinds and RecurrentTypes,
// so a kind one of them does not handle fails there.

// numKinds is one past the last valid Kind.
const numKinds = Recurrent + 1

// kindNames must name every kind: the array length is checked at compile
// time against numKinds.
var _ = [1]struct{}{}[len(kindNames)-int(numKinds)]

// Kinds lists every valid layer kind, in declaration order.
func Kinds() []Kind {
	out := make([]Kind, 0, numKinds-1)
	for k := KindInvalid + 1; k < numKinds; k++ {
		out = append(out, k)
	}
	return out
}

// Valid reports whether k is one of Kinds.
func (k Kind) Valid() bool { return k > KindInvalid && k < numKinds }

// Windowed reports whether a layer of kind k stops needing the state of
// old tokens as it goes (sliding window, chunked local): its first live
// position can fall inside a block.
func (k Kind) Windowed() bool { return k == SlidingWindow || k == ChunkedLocal }

// recurrentTypes is every recurrent family, in display order.
var recurrentTypes = []RecurrentType{Mamba2, Mamba1, GDN, KDA, ShortConv}

// RecurrentTypes lists every recurrent layer family.
func RecurrentTypes() []RecurrentType { return append([]RecurrentType(nil), recurrentTypes...) }

func (t RecurrentType) valid() bool {
	for _, v := range recurrentTypes {
		if v == t {
			return true
		}
	}
	return false
}

// SkippedTokens is the number of leading tokens of n computed tokens whose
// state a layer of kind k no longer needs (the allocator's skipped-token
// rule, vLLM's get_num_skipped_tokens): full attention, MLA and indexer 0;
// sliding window of window W max(0, n-W+1); chunked local of chunk C
// floor(n/C)*C; recurrent n-1 (only the newest state). window and chunk
// are read only for their kinds. It panics on a kind outside Kinds: specs
// are validated before anything asks.
func SkippedTokens(k Kind, window, chunk, n int) int {
	switch k {
	case FullAttention, MLA, Indexer:
		return 0
	case SlidingWindow:
		return max(0, n-window+1)
	case ChunkedLocal:
		return n / chunk * chunk
	case Recurrent:
		return max(0, n-1)
	}
	panic(fmt.Sprintf("groups: no skipped-token rule for kind %v", k))
}

// LiveStart is the first position whose state layer l still needs after n
// positions were computed, which is also the first position that position
// n attends to: SkippedTokens of its kind.
func (l *Layer) LiveStart(n int) int {
	w, c := 0, 0
	if l.Attention != nil {
		w, c = l.Attention.Window, l.Attention.Chunk
	}
	return SkippedTokens(l.Kind, w, c, n)
}

// LiveTokens is how many of n tokens' state layer l holds while it
// computes the last of them, the convention of the reference tables
// (shared/reference/models.md): a sliding window of W holds min(n, W)
// tokens (the W-1 that the next position still needs, plus the newest);
// chunked local n - floor(n/C)*C; recurrent 0 (its state is fixed-size);
// every other kind n.
func (l *Layer) LiveTokens(n int) int {
	switch l.Kind {
	case SlidingWindow:
		return min(n, l.Attention.Window)
	case ChunkedLocal, FullAttention, MLA, Indexer:
		return n - l.LiveStart(n)
	case Recurrent:
		return 0
	}
	panic(fmt.Sprintf("groups: no live-token rule for kind %v", l.Kind))
}

// KindSample returns a small valid layer of kind k named name (recurrent:
// of family typ, ignored for other kinds), for tests that must cover every
// kind and every recurrent family. Every head and unit count is 8, so tp
// 1, 2, 4 and 8 shard it.
func KindSample(k Kind, typ RecurrentType, name string) Layer {
	switch k {
	case FullAttention:
		return AttentionLayer(name, 8, 4, BF16)
	case SlidingWindow:
		return SlidingLayer(name, 8, 4, 5, BF16)
	case ChunkedLocal:
		return Layer{Name: name, Kind: ChunkedLocal, Attention: &Attention{KVHeads: 8, HeadDim: 4, DType: BF16, Chunk: 6}}
	case MLA:
		return MLALayer(name, 8, 4, BF16, MLAPlain)
	case Indexer:
		return IndexerLayer(name, 128)
	case Recurrent:
		var r *RecurrentSpec
		switch typ {
		case Mamba2:
			r = Mamba2State(8, 2, 8, 2, 4, BF16, FP32)
		case Mamba1:
			r = Mamba1State(16, 2, 4, BF16, FP32)
		case GDN:
			r = GDNState(8, 8, 2, 2, 4, BF16, FP32)
		case KDA:
			r = KDAState(8, 2, 8, 2, 4, BF16)
		case ShortConv:
			r = ShortConvState(16, 3, BF16)
		default:
			panic(fmt.Sprintf("groups: no sample for recurrent type %q", typ))
		}
		return RecurrentLayer(name, r)
	}
	panic(fmt.Sprintf("groups: no sample for kind %v", k))
}

// KindSampleModel returns a valid model with one KindSample layer of every
// kind and, for Recurrent, of every recurrent family.
func KindSampleModel() *Model {
	m := &Model{Name: "every-kind"}
	for _, k := range Kinds() {
		if k != Recurrent {
			m.Layers = append(m.Layers, KindSample(k, "", fmt.Sprintf("layers.%d.%s", len(m.Layers), k)))
			continue
		}
		for _, t := range RecurrentTypes() {
			m.Layers = append(m.Layers, KindSample(k, t, fmt.Sprintf("layers.%d.%s", len(m.Layers), t)))
		}
	}
	return m
}
