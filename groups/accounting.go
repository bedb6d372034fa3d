package groups

// Summary is the per-rank size accounting of one request's state, the
// numbers `hybridxfer models` prints. It is exact: no block rounding, no
// page padding.
type Summary struct {
	Name          string         `json:"name"`
	Layers        int            `json:"layers"`
	LayersByKind  map[string]int `json:"layers_by_kind"`
	DraftLayers   int            `json:"draft_layers"`
	TP            int            `json:"tp"`
	PromptTokens  int            `json:"prompt_tokens"`
	AttnTokenB    int64          `json:"attention_bytes_per_token"` // all per-token layers but sliding windows, per rank
	SlidingTokenB int64          `json:"sliding_bytes_per_token"`   // sliding-window layers, per rank, before capping
	FixedB        int64          `json:"fixed_recurrent_bytes"`     // conv + recurrent state per request, per rank
	StateBytes    int64          `json:"state_bytes"`               // one request, prompt_tokens tokens, one rank, draft excluded
	DraftBytes    int64          `json:"draft_bytes"`               // draft layers' state for the same request and rank
	DraftTokenB   int64          `json:"draft_bytes_per_token"`     // draft layers, per token, per rank
}

// Summarize computes the exact per-rank state of one request of
// promptTokens tokens at tp (rank 0; every rank of a valid tp holds the same
// number of bytes).
func Summarize(m *Model, promptTokens, tp int) (Summary, error) {
	s := Summary{Name: m.Name, TP: tp, PromptTokens: promptTokens, LayersByKind: map[string]int{}}
	if err := m.CheckTP(tp); err != nil {
		return s, err
	}
	for i := range m.Layers {
		l := &m.Layers[i]
		sh, err := m.Shape(i, tp, 0)
		if err != nil {
			return s, err
		}
		var b int64
		if l.Kind == Recurrent {
			b = int64(sh.StateBytes)
		} else {
			b = int64(sh.TokenBytes) * int64(l.LiveTokens(promptTokens))
		}
		if l.Draft {
			s.DraftLayers++
			s.DraftBytes += b
			s.DraftTokenB += int64(sh.TokenBytes)
			continue
		}
		s.Layers++
		s.LayersByKind[l.Kind.String()]++
		switch l.Kind {
		case Recurrent:
			s.FixedB += b
		case SlidingWindow:
			s.SlidingTokenB += int64(sh.TokenBytes)
		default:
			s.AttnTokenB += int64(sh.TokenBytes)
		}
		s.StateBytes += b
	}
	return s, nil
}
