package refmodel

import (
	"github.com/hybridxfer/hybridxfer/groups"
)

// recurrent computes a linear layer at position t:
//
//	u = Win·h + λ⊙row_{R-1}            conv input, all channels (segments concatenated)
//	a[c] = softsign(sum_r Wc[c][r]·row_r[c] + Wc[c][R]·u[c])   over all R conv rows and u
//	rows shift up by one, u becomes row R-1 (the newest)
//	per state tensor, per head: features f = a[start .. start+4) (mod channels),
//	  k, v, q = projections of f, gates from h; the head's state S (d1 x d2) is
//	  updated by the layer type's rule and read out as y = S·q
//	out = Wa·a + sum over tensors of Wy·y
//
// The conv input leaks the previous newest row in (λ in [0.25, 0.5)), so
// even a one-row conv state depends on its whole history: a token fed twice
// leaves a different state (unless the newest row is exactly zero). At t = 0 the conv rows and states are
// zero and are not read (a new request).
func (st *step) recurrent(li int, l *groups.Layer, w *recWeights, h []float32) ([]float32, error) {
	r := l.Recurrent
	t, C, R := st.t, w.channels, w.rows
	sc := &st.cache.rs
	u := matVecInto(grow(&sc.u, C), w.in, h)
	// The run's cache carries the layer's conv rows as one block and its
	// state heads (numbered across state tensors) between positions;
	// cached is nil when it does not (runcache.go).
	cached := st.cache.recLayer(li, w.heads)
	var rows []float32 // channel-major: rows[c*R + row]; only read
	switch {
	case t > 0 && cached != nil && cached.conv != nil:
		rows = cached.conv
	default:
		rows = make([]float32, C*R)
		if t > 0 {
			for si, s := range r.Segments {
				for ch := 0; ch < s.Channels(); ch++ {
					c := w.segOff[si] + ch
					if err := st.s.Read(ConvCoord(li, si, ch, 0), rows[c*R:(c+1)*R]); err != nil {
						return nil, st.readErr(li, err)
					}
				}
			}
		}
	}
	for c := 0; c < C; c++ {
		u[c] += float32(w.leak[c] * rows[c*R+R-1])
	}
	a := grow(&sc.a, C)
	for c := 0; c < C; c++ {
		wc := w.conv[c*(R+1) : (c+1)*(R+1)]
		acc := dot(wc[:R], rows[c*R:(c+1)*R]) + float32(wc[R]*u[c])
		a[c] = softsign(acc)
	}
	next := cached.buffer(C * R) // the rows shifted up, u the newest
	for c := 0; c < C; c++ {
		copy(next[c*R:(c+1)*R-1], rows[c*R+1:(c+1)*R])
		next[c*R+R-1] = u[c]
	}
	upd := recUpdate{layer: cached, conv: next, slab: cached.stateSlab(w.stateValues), states: cached.updates(w.heads)}
	through := !st.cache.carrying()
	if through {
		for si, s := range r.Segments {
			for ch := 0; ch < s.Channels(); ch++ {
				c := w.segOff[si] + ch
				st.fixed = append(st.fixed, pending{c: ConvCoord(li, si, ch, 0), v: next[c*R : (c+1)*R]})
			}
		}
	}
	out := matVec(w.o, Hidden, a)
	k, off := 0, 0
	f := grow(&sc.f, stateFeatures)
	for si := range r.States {
		s := &r.States[si]
		sw := &w.states[si]
		n := sw.d1 * sw.d2
		gates := matVecInto(grow(&sc.gates, 2*s.Heads), sw.gates, h)
		ys := grow(&sc.ys, s.Heads*sw.d1)
		for hd := 0; hd < s.Heads; hd++ {
			S := upd.slab[off : off+n : off+n]
			off += n
			if t > 0 {
				if cached != nil && cached.states[k+hd] != nil {
					copy(S, cached.states[k+hd])
				} else if err := st.s.Read(StateCoord(li, si, hd), S); err != nil {
					return nil, st.readErr(li, err)
				}
			}
			start := hd * C / s.Heads
			for j := range f {
				f[j] = a[(start+j)%C]
			}
			update(w.rule, &sw.heads[hd], sw.d1, sw.d2, S, f, gates[2*hd], gates[2*hd+1], grow(&sc.kvq, 2*sw.d2+sw.d1), ys[hd*sw.d1:(hd+1)*sw.d1])
			upd.states[k+hd] = S
			if through {
				st.fixed = append(st.fixed, pending{c: StateCoord(li, si, hd), v: S})
			}
		}
		k += s.Heads
		addInto(out, matVecInto(grow(&sc.o, Hidden), sw.o, ys))
	}
	if cached != nil {
		if cached.convAt == nil {
			cached.setCoords(li, r, w.segOff, R)
		}
		st.recUpdates = append(st.recUpdates, upd)
	}
	return out, nil
}

// recScratch is a recurrent layer's working memory at one position:
// nothing in it outlives the position's layer.
type recScratch struct {
	u, a, f, gates, kvq, ys, o []float32
}

// grow returns (*buf)[:n], reallocating *buf when it is shorter.
func grow(buf *[]float32, n int) []float32 {
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	return (*buf)[:n]
}

// rule is the state update of a recurrent family.
type rule uint8

const (
	ruleDelta       rule = iota + 1 // GDN
	ruleDeltaDecay                  // KDA: per-row decay
	ruleScan                        // Mamba2 (and state tensors a short conv declares)
	ruleScanPerElem                 // Mamba1: a decay rate per state element
)

// ruleOf is the update rule of each recurrent family; a family without one
// is refused by New (ErrNotMiniature), never computed by a guess.
func ruleOf(t groups.RecurrentType) (rule, bool) {
	switch t {
	case groups.GDN:
		return ruleDelta, true
	case groups.KDA:
		return ruleDeltaDecay, true
	case groups.Mamba2, groups.ShortConv:
		return ruleScan, true
	case groups.Mamba1:
		return ruleScanPerElem, true
	}
	return 0, false
}

// update applies one token to state head S (d1 x d2, row-major, in place)
// and sets its read-out y (d1 values). k, v, q are projections of the
// features f (computed into kvq, 2*d2+d1 values of scratch); g, b are the
// head's gates, dot products of its gate weights with the layer input h.
//
//	GDN:        S = α·S; S += β·(v − S·k̂)·k̂ᵀ        α = gate(g), β = gate(b), k̂ = k/|k|
//	KDA:        as GDN with a per-row decay α_i = gate(g + A_i0 − 1)
//	Mamba2:     S = expNeg(−dt·A_00)·S + dt·v·kᵀ     dt = gate(g); y += skip·v
//	Mamba1:     S_ij = expNeg(−dt·A_ij)·S_ij + dt·v_i·k_j;  y += skip·v
//	short_conv: conv only; state tensors it declares get the Mamba2 rule
//
// and y = S·q in every case.
func update(ru rule, hw *headWeights, d1, d2 int, S, f []float32, g, b float32, kvq, y []float32) {
	matVecInto(kvq, hw.kvq, f)
	k, v, q := kvq[:d2:d2], kvq[d2:d2+d1:d2+d1], kvq[d2+d1:]
	delta := ru == ruleDelta || ru == ruleDeltaDecay
	if delta {
		l2Normalize(k)
		beta := gate(b)
		for i := 0; i < d1; i++ {
			alpha := gate(g)
			if ru == ruleDeltaDecay {
				alpha = gate(g + hw.a[i*d2] - 1)
			}
			row := S[i*d2 : (i+1)*d2]
			for j := range row {
				row[j] *= alpha
			}
			e := v[i] - dot(row, k)
			be := float32(beta * e)
			for j := range row {
				row[j] += float32(be * k[j])
			}
		}
	} else {
		dt := gate(g)
		for i := 0; i < d1; i++ {
			dv := float32(dt * v[i])
			for j := 0; j < d2; j++ {
				rate := hw.a[0]
				if ru == ruleScanPerElem {
					rate = hw.a[i*d2+j]
				}
				decay := expNeg(-float32(dt * rate))
				S[i*d2+j] = float32(decay*S[i*d2+j]) + float32(dv*k[j])
			}
		}
	}
	for i := 0; i < d1; i++ {
		y[i] = dot(S[i*d2:(i+1)*d2], q)
		if !delta {
			y[i] += float32(hw.skip * v[i])
		}
	}
}
