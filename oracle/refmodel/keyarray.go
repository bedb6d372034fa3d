package refmodel

import (
	"runtime"
	"slices"
	"sync"
)

// keyArray is one attention head's keys and values in a run (a kv head of
// an attention layer, or a token-attention layer's vectors), dequantized
// and flat: position p's key is k[(p-base)*kw:][:kw], its values
// v[(p-base)*vw:][:vw] (a token-attention layer keeps no v: its values are
// the first nv values of each key). The array covers the committed
// positions [base, end); a position's entry is made once per run from
// what readVia returns, so position t's attention reads the same bits as
// gathering every earlier position again, without the O(t) gather.
// Commit truncates the array at a position it rewrites (invalidate).
type keyArray struct {
	base, end int
	kw, vw    int
	k, v      []float32
	// scores, ps: this head's scratch for one position.
	scores, ps []float32
}

type headKey struct{ layer, index int }

// keyArray returns the array of layer li's head g, creating it.
func (tc *runCache) keyArray(li, g, kw, vw int) *keyArray {
	k := headKey{li, g}
	ka := tc.arrays[k]
	if ka == nil {
		ka = &keyArray{kw: kw, vw: vw}
		if tc.arrays == nil {
			tc.arrays = map[headKey]*keyArray{}
		}
		tc.arrays[k] = ka
	}
	return ka
}

// invalidate drops the entries of position pos and later from the array
// of its layer and head, if the run has one (commit rewrote pos).
func (tc *runCache) invalidate(li, g, pos int) {
	ka := tc.arrays[headKey{li, g}]
	if ka == nil || pos >= ka.end {
		return
	}
	if pos <= ka.base {
		ka.reset(pos)
		return
	}
	ka.end = pos
	ka.k = ka.k[:(pos-ka.base)*ka.kw]
	ka.v = ka.v[:(pos-ka.base)*ka.vw]
}

func (ka *keyArray) reset(at int) {
	ka.base, ka.end = at, at
	ka.k, ka.v = ka.k[:0], ka.v[:0]
}

// window makes the array start at lo (attention never reads below it
// again in this run: LiveStart does not decrease with t); the caller then
// pushes the positions from end on that it lacks.
func (ka *keyArray) window(lo int) {
	switch {
	case lo < ka.base || lo > ka.end:
		ka.reset(lo)
	case lo > ka.base:
		ka.k = ka.k[(lo-ka.base)*ka.kw:]
		ka.v = ka.v[(lo-ka.base)*ka.vw:]
		ka.base = lo
	}
}

// push appends the next position's key and values (v nil for a
// token-attention layer).
func (ka *keyArray) push(k, v []float32) {
	ka.k = append(ka.k, k...)
	ka.v = append(ka.v, v...)
	ka.end++
}

// headJob is one head's attention at one position: its query, its array
// and the position's own key and values, which are not committed yet and
// go at the end of the array's spare capacity (the array's length does
// not change).
type headJob struct {
	q         []float32
	ka        *keyArray
	ownK      []float32
	ownV      []float32 // nil: the values are the first dim values of the keys
	dim       int
	scale     float32
	out       []float32 // dim values
	keys, vls []float32 // set by stage
	vw, n     int
}

// stage lays the position's own key and values after the array's entries
// and sizes the head's scratch; it runs before the heads run in parallel.
func (j *headJob) stage() {
	ka := j.ka
	ka.k = slices.Grow(ka.k, ka.kw)
	j.keys = append(ka.k, j.ownK...)
	j.vls, j.vw = j.keys, ka.kw
	if j.ownV != nil {
		ka.v = slices.Grow(ka.v, ka.vw)
		j.vls, j.vw = append(ka.v, j.ownV...), ka.vw
	}
	j.n = ka.end - ka.base + 1
	if cap(ka.scores) < j.n {
		ka.scores = make([]float32, j.n, 2*j.n)
		ka.ps = make([]float32, j.n, 2*j.n)
	}
}

// run computes the head's output: softmax over dot(q, key_j)·scale,
// then the weighted average of the values (dotsFlat, attendFlat), the
// same operations in the same order as one key at a time.
func (j *headJob) run() {
	ka := j.ka
	scores := ka.scores[:j.n]
	var m float32
	if len(j.q) == 4 && ka.kw == 4 {
		m = scores4(j.q, j.keys, j.scale, scores)
	} else {
		dotsFlat(j.q, j.keys, ka.kw, scores)
		for i := range scores {
			scores[i] *= j.scale
		}
		m = maxOf(scores)
	}
	attendFlat(scores, m, j.vls, j.vw, j.dim, ka.ps[:j.n], j.out)
}

// parallelKeys is the number of keys per head from which a layer's heads
// run on several goroutines; below it one goroutine is faster.
const parallelKeys = 96

// attendHeads runs the jobs, on up to GOMAXPROCS goroutines when
// parallel and there is enough work. Each job writes only its own array's
// scratch and its out, so the results do not depend on the schedule.
func attendHeads(jobs []headJob, parallel bool) {
	for i := range jobs {
		jobs[i].stage()
	}
	workers := min(len(jobs), runtime.GOMAXPROCS(0))
	if !parallel || workers < 2 || jobs[0].n < parallelKeys {
		for i := range jobs {
			jobs[i].run()
		}
		return
	}
	var wg sync.WaitGroup
	for w := 1; w < workers; w++ {
		wg.Go(func() {
			for i := w; i < len(jobs); i += workers {
				jobs[i].run()
			}
		})
	}
	for i := 0; i < len(jobs); i += workers {
		jobs[i].run()
	}
	wg.Wait()
}
