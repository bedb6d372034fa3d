package kernels

import (
	"sync"
	"unsafe"
)

// tile is the side, in items, of the square tiles that element transposes
// walk so that both the rows read and the rows written stay in cache.
const tile = 64

// RunTranspose runs t from src to dst after validating it (see
// Transpose.Validate; dst and src may share memory if no source matrix
// overlaps a destination matrix).
func RunTranspose(dst, src []byte, t Transpose) error {
	delta, alias := aliasOf(dst, src)
	if err := t.validate(int64(len(dst)), int64(len(src)), alias, delta); err != nil {
		return err
	}
	if t.Empty() {
		return nil
	}
	m := t.MatrixBytes()
	bands := (t.Rows + tile - 1) / tile // row bands per matrix
	units := t.Batches * bands
	total := m * int64(t.Batches)
	run := func(u0, u1 int) {
		for u := u0; u < u1; u++ {
			b, band := u/bands, u%bands
			s := src[t.SrcOff+int64(b)*t.SrcBatchStride:][:m]
			d := dst[t.DstOff+int64(b)*t.DstBatchStride:][:m]
			transposeBand(d, s, t.Rows, t.Cols, t.ItemBytes, band*tile, min(band*tile+tile, t.Rows))
		}
	}
	w := min(workersFor(total), units)
	if w <= 1 {
		run(0, units)
		return nil
	}
	var wg sync.WaitGroup
	for k := 0; k < w-1; k++ {
		wg.Add(1)
		go func(u0, u1 int) {
			defer wg.Done()
			run(u0, u1)
		}(units*k/w, units*(k+1)/w)
	}
	run(units*(w-1)/w, units)
	wg.Wait()
	return nil
}

// transposeBand transposes rows [r0, r1) of the rows x cols matrix s of
// item-byte items into d.
func transposeBand(d, s []byte, rows, cols, item, r0, r1 int) {
	if item == 2 && cols == 3 {
		// (dim x 3) -> (3 x dim): DS -> SD of a kernel-4 conv state.
		r0 = dsToSD3(d, s, rows, r0, r1)
	} else if item == 2 && rows == 3 && r0 == 0 && r1 == 3 {
		// (3 x dim) -> (dim x 3): SD -> DS.
		c := sdToDS3(d, s, cols, 0, cols)
		for r := 0; r < 3; r++ {
			for x := c; x < cols; x++ {
				copy(d[2*(x*3+r):2*(x*3+r)+2], s[2*(r*cols+x):2*(r*cols+x)+2])
			}
		}
		return
	}
	if r0 >= r1 {
		return
	}
	if aligned(d, item) && aligned(s, item) {
		switch item {
		case 1:
			transposeTyped(d, s, rows, cols, r0, r1)
			return
		case 2:
			transposeTyped(view[uint16](d), view[uint16](s), rows, cols, r0, r1)
			return
		case 4:
			transposeTyped(view[uint32](d), view[uint32](s), rows, cols, r0, r1)
			return
		case 8:
			transposeTyped(view[uint64](d), view[uint64](s), rows, cols, r0, r1)
			return
		}
	}
	transposeItems(d, s, rows, cols, item, r0, r1)
}

// aligned reports whether b starts at a multiple of item bytes, item being a
// power of two up to 8.
func aligned(b []byte, item int) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))%uintptr(item) == 0
}

// view reinterprets b, aligned for T, as a slice of T.
func view[T uint16 | uint32 | uint64](b []byte) []T {
	var z T
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/int(unsafe.Sizeof(z)))
}

// transposeTyped transposes rows [r0, r1) of the rows x cols matrix s into
// d, one tile at a time, writing each destination row sequentially.
func transposeTyped[T uint8 | uint16 | uint32 | uint64](d, s []T, rows, cols, r0, r1 int) {
	if r1-r0 < 8 {
		// Few rows (a band of a short matrix): reading whole source rows
		// beats walking many short destination rows.
		for r := r0; r < r1; r++ {
			in := s[r*cols : r*cols+cols]
			out := d[r : r+(cols-1)*rows+1]
			for c, v := range in {
				out[c*rows] = v
			}
		}
		return
	}
	for c0 := 0; c0 < cols; c0 += tile {
		c1 := min(c0+tile, cols)
		for c := c0; c < c1; c++ {
			out := d[c*rows+r0 : c*rows+r1]
			in := s[r0*cols+c:]
			for i := range out {
				out[i] = in[i*cols]
			}
		}
	}
}

// transposeItems is transposeTyped for items of any size, one copy per item.
func transposeItems(d, s []byte, rows, cols, item, r0, r1 int) {
	for c0 := 0; c0 < cols; c0 += tile {
		c1 := min(c0+tile, cols)
		for c := c0; c < c1; c++ {
			o := (c*rows + r0) * item
			for r := r0; r < r1; r++ {
				i := (r*cols + c) * item
				copy(d[o:o+item], s[i:i+item])
				o += item
			}
		}
	}
}
