package kernels

import (
	"runtime"
	"sync"
)

// Tuning knobs; variables so that tests can force the parallel path.
var (
	// parallelThreshold is the number of bytes of one call above which the
	// work is split across goroutines.
	parallelThreshold int64 = 4 << 20
	// minShare is the smallest number of bytes worth a goroutine.
	minShare int64 = 1 << 20
	// maxWorkers caps the number of goroutines; 0 means GOMAXPROCS.
	maxWorkers = 0
)

// workersFor returns how many goroutines should share total bytes.
func workersFor(total int64) int {
	if total < parallelThreshold {
		return 1
	}
	w := maxWorkers
	if w <= 0 {
		w = runtime.GOMAXPROCS(0)
	}
	if n := total / max(minShare, 1); n < int64(w) {
		w = int(n)
	}
	return max(w, 1)
}

// Copy runs ops: each op copies src[Src:Src+Len] to dst[Dst:Dst+Len] with
// Memmove (so ops of StreamThreshold bytes or more stream). It validates
// every op first (see ValidateOps; dst and src may share memory) and copies
// nothing when one is bad.
func Copy(dst, src []byte, ops []CopyOp) error {
	delta, alias := aliasOf(dst, src)
	total, err := validateOps(ops, int64(len(dst)), int64(len(src)), alias, delta)
	if err != nil {
		return err
	}
	w := workersFor(total)
	if w == 1 {
		for _, op := range ops {
			Memmove(dst[op.Dst:op.Dst+op.Len], src[op.Src:op.Src+op.Len])
		}
		return nil
	}
	copyParallel(dst, src, ops, total, w)
	return nil
}

// cursor is a position in the byte stream of an op list: byte off of ops[op].
type cursor struct {
	op  int
	off int64
}

// copyParallel splits the bytes of ops into w shares of equal size, cutting
// ops where needed, and copies each share on its own goroutine.
func copyParallel(dst, src []byte, ops []CopyOp, total int64, w int) {
	cuts := make([]cursor, w+1)
	cuts[w] = cursor{op: len(ops)}
	k := 1
	var done int64 // bytes of ops before ops[i]
	for i := 0; i < len(ops) && k < w; i++ {
		n := ops[i].Len
		for k < w {
			target := total/int64(w)*int64(k) + total%int64(w)*int64(k)/int64(w)
			if target >= done+n {
				break
			}
			cuts[k] = cursor{op: i, off: target - done}
			k++
		}
		done += n
	}
	var wg sync.WaitGroup
	for s := 0; s < w-1; s++ {
		wg.Add(1)
		go func(from, to cursor) {
			defer wg.Done()
			copyShare(dst, src, ops, from, to)
		}(cuts[s], cuts[s+1])
	}
	copyShare(dst, src, ops, cuts[w-1], cuts[w])
	wg.Wait()
}

// copyShare copies the bytes of ops between two cursors.
func copyShare(dst, src []byte, ops []CopyOp, from, to cursor) {
	for i := from.op; i < len(ops) && i <= to.op; i++ {
		op := ops[i]
		lo, hi := int64(0), op.Len
		if i == from.op {
			lo = from.off
		}
		if i == to.op {
			hi = to.off
		}
		if lo < hi {
			Memmove(dst[op.Dst+lo:op.Dst+hi], src[op.Src+lo:op.Src+hi])
		}
	}
}
