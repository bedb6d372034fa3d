package kernels

import (
	"sync"
	"unsafe"
)

const (
	// tile is the side, in items, of the square tiles that element
	// transposes walk so that both the rows read and the rows written stay
	// in cache.
	tile = 64
	// streamRun is the length, in bytes, that a streaming transpose aims at
	// for the destination runs of a band (a column of it): long runs keep
	// the streaming stores filling whole cache lines.
	streamRun = 4 << 10
)

// RunTranspose runs t from src to dst after validating it (see
// Transpose.Validate; dst and src may share memory if no source matrix
// overlaps a destination matrix).
//
// A call moving StreamThreshold bytes or more (where Memmove streams)
// writes the destination with non-temporal stores where a streaming kernel
// fits the shape and the destination's alignment: conv states (2 to 8 rows
// of 1-, 2-, 4- or 8-byte elements) and items of whole cache lines
// (attention pages); other calls write the destination directly. (Staging
// blocks in a cached buffer and streaming them out measured slower than
// direct writes for the other shapes, whose kernels are bound by the CPU.)
func RunTranspose(dst, src []byte, t Transpose) error {
	delta, alias := aliasOf(dst, src)
	if err := t.validate(int64(len(dst)), int64(len(src)), alias, delta); err != nil {
		return err
	}
	if t.Empty() {
		return nil
	}
	j := transposeJob{dst: dst, src: src, t: t, m: t.MatrixBytes()}
	total := j.m * int64(t.Batches)
	j.stream = useAVX2 && total >= int64(streamMin)
	j.h = bandRows(t.Rows, t.ItemBytes, j.stream)
	j.bands = (t.Rows + j.h - 1) / j.h
	units := t.Batches * j.bands
	w := min(workersFor(total), units)
	if w <= 1 {
		j.run(0, units)
		return nil
	}
	runParallel(j, units, w)
	return nil
}

// runParallel runs the units of j on w goroutines. (It takes j by value so
// that RunTranspose's j stays on the stack.)
func runParallel(j transposeJob, units, w int) {
	var wg sync.WaitGroup
	for k := 0; k < w-1; k++ {
		wg.Add(1)
		go func(u0, u1 int) {
			defer wg.Done()
			j.run(u0, u1)
		}(units*k/w, units*(k+1)/w)
	}
	j.run(units*(w-1)/w, units)
	wg.Wait()
}

// transposeJob is a validated transpose cut into units: bands row bands of
// h rows per matrix.
type transposeJob struct {
	dst, src []byte
	t        Transpose
	m        int64 // bytes of one matrix
	h, bands int
	stream   bool
}

// run transposes units [u0, u1).
func (j *transposeJob) run(u0, u1 int) {
	t := j.t
	for u := u0; u < u1; u++ {
		b, band := u/j.bands, u%j.bands
		s := j.src[t.SrcOff+int64(b)*t.SrcBatchStride:][:j.m]
		d := j.dst[t.DstOff+int64(b)*t.DstBatchStride:][:j.m]
		r0, r1 := band*j.h, min(band*j.h+j.h, t.Rows)
		if j.stream {
			streamBand(d, s, t.Rows, t.Cols, t.ItemBytes, r0, r1)
		} else {
			transposeBand(d, s, t.Rows, t.Cols, t.ItemBytes, r0, r1)
		}
	}
}

// bandRows returns the height of the row bands that a transpose of rows
// rows of item-byte items is cut into: a tile, or when streaming enough rows
// for destination runs of streamRun bytes (a multiple of a tile).
func bandRows(rows, item int, stream bool) int {
	h := tile
	if stream {
		h = max((streamRun/item+tile-1)/tile*tile, tile)
	}
	return min(h, rows)
}

// transposeBand transposes rows [r0, r1) of the rows x cols matrix s of
// item-byte items into d, writing d directly.
func transposeBand(d, s []byte, rows, cols, item, r0, r1 int) {
	transposeBlock(d[r0*item:], s[r0*cols*item:], rows, cols, r1-r0, cols, item)
}

// streamBand is transposeBand with streaming stores where a streaming
// kernel fits: splitStream for few columns (DS -> SD), mergeStream for few
// rows (SD -> DS), streamLines for items of whole cache lines in a 64-byte
// aligned matrix. Other bands are written directly.
func streamBand(d, s []byte, rows, cols, item, r0, r1 int) {
	h := r1 - r0
	switch {
	case convShape(cols, item):
		if splitStream(d[r0*item:], rows*item, s[r0*cols*item:], h, cols, item) {
			return
		}
	case h == rows && convShape(rows, item):
		if mergeStream(d, s, cols*item, cols, rows, item) {
			return
		}
	case item%64 == 0 && addr(d)%64 == 0:
		streamLines(d, s, rows, cols, item, r0, r1)
		return
	}
	transposeBand(d, s, rows, cols, item, r0, r1)
}

// streamLines is streamBand for items of whole cache lines in a 64-byte
// aligned destination: each item streams straight from the source, in
// destination order, and one fence ends the band. It measured 10-25% faster
// than plain stores on 256-byte head vectors.
func streamLines(d, s []byte, rows, cols, item, r0, r1 int) {
	for c := 0; c < cols; c++ {
		o := (c*rows + r0) * item
		for r := r0; r < r1; r++ {
			i := (r*cols + c) * item
			copyNTLines(&d[o], &s[i], item)
			o += item
		}
	}
	sfence()
}

// transposeBlock transposes an h x w block of item-byte items: item (r, c)
// at s[(r*ss+c)*item] goes to d[(c*ds+r)*item]. ds and ss are the row
// strides, in items, of the destination and of the source. Blocks of whole
// rows with few columns, or whole columns with few rows, go to the shuffle
// kernels first (conv states); the rest to transposeGo.
func transposeBlock(d, s []byte, ds, ss, h, w, item int) {
	switch {
	case ss == w && convShape(w, item):
		n := splitRows(d, ds*item, s, h, w, item, false)
		d, s, h = d[n*item:], s[n*w*item:], h-n
	case ds == h && convShape(h, item):
		n := mergeRows(d, s, ss*item, w, h, item, false)
		d, s, w = d[n*h*item:], s[n*item:], w-n
	}
	transposeGo(d, s, ds, ss, h, w, item)
}

// transposeGo is transposeBlock in Go.
func transposeGo(d, s []byte, ds, ss, h, w, item int) {
	switch {
	case h == 0 || w == 0:
		return
	case w == 1 && ss == 1, h == 1 && ds == 1:
		// One column or one row of contiguous items (a conv state of one
		// row): a copy.
		Memmove(d[:h*w*item], s[:h*w*item])
		return
	case item == 2 && w == 3 && ss == 3:
		// (dim x 3) -> (3 x dim): DS -> SD of a kernel-4 conv state.
		deint3(d, d[2*ds:], d[4*ds:], s, h)
		return
	case item == 2 && h == 3 && ds == 3:
		// (3 x dim) -> (dim x 3): SD -> DS.
		int3(d, s, s[2*ss:], s[4*ss:], w)
		return
	}
	if aligned(d, item) && aligned(s, item) {
		switch item {
		case 1:
			blockTyped(d, s, ds, ss, h, w)
			return
		case 2:
			blockTyped(view[uint16](d), view[uint16](s), ds, ss, h, w)
			return
		case 4:
			blockTyped(view[uint32](d), view[uint32](s), ds, ss, h, w)
			return
		case 8:
			blockTyped(view[uint64](d), view[uint64](s), ds, ss, h, w)
			return
		}
	}
	blockItems(d, s, ds, ss, h, w, item)
}

// aligned reports whether b starts at a multiple of item bytes, item being a
// power of two up to 8.
func aligned(b []byte, item int) bool {
	return addr(b)%uintptr(item) == 0
}

// view reinterprets b, aligned for T, as a slice of T.
func view[T uint16 | uint32 | uint64](b []byte) []T {
	var z T
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/int(unsafe.Sizeof(z)))
}

// blockTyped is transposeBlock for items of type T, one tile at a time,
// writing each destination row of a tile sequentially.
func blockTyped[T uint8 | uint16 | uint32 | uint64](d, s []T, ds, ss, h, w int) {
	if h < 8 {
		// Few rows (a band of a short matrix): reading whole source rows
		// beats walking many short destination rows.
		for r := 0; r < h; r++ {
			in := s[r*ss : r*ss+w]
			out := d[r : r+(w-1)*ds+1]
			for c, v := range in {
				out[c*ds] = v
			}
		}
		return
	}
	for r0 := 0; r0 < h; r0 += tile {
		r1 := min(r0+tile, h)
		for c0 := 0; c0 < w; c0 += tile {
			c1 := min(c0+tile, w)
			for c := c0; c < c1; c++ {
				out := d[c*ds+r0 : c*ds+r1]
				in := s[r0*ss+c:]
				for i := range out {
					out[i] = in[i*ss]
				}
			}
		}
	}
}

// blockItems is blockTyped for items of any size, one Memmove per item.
func blockItems(d, s []byte, ds, ss, h, w, item int) {
	for r0 := 0; r0 < h; r0 += tile {
		r1 := min(r0+tile, h)
		for c0 := 0; c0 < w; c0 += tile {
			c1 := min(c0+tile, w)
			for c := c0; c < c1; c++ {
				o := (c*ds + r0) * item
				for r := r0; r < r1; r++ {
					i := (r*ss + c) * item
					Memmove(d[o:o+item], s[i:i+item])
					o += item
				}
			}
		}
	}
}
