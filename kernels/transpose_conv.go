package kernels

import "encoding/binary"

// Transposes with few rows or few columns: conv states, DS (dim, rows) <->
// SD (rows, dim), rows being conv kernel - 1 + speculative tokens. On amd64
// with AVX2, splitRows and mergeRows (transpose_conv_amd64.go) move 32
// bytes per row at a time with byte shuffles for 2 to 8 rows of 1-, 2-, 4-
// or 8-byte items, and splitStream and mergeStream do the same with
// streaming stores. Elsewhere, and for the channels left over, the generic
// kernels run, except for 3 rows of 2 bytes (kernel 4, no speculative
// tokens: the common case), where deint3 and int3 move four channels with
// three 8-byte loads and three 8-byte stores. All are exact permutations.

const (
	// maxConvRows is the most rows the shuffle kernels handle.
	maxConvRows = 8
	// convChunk is the most channels one shuffle kernel call moves (at most
	// 1 MiB): assembly cannot be preempted.
	convChunk = 16 << 10
)

// convShape reports whether the shuffle kernels handle rows of w items of
// item bytes.
func convShape(w, item int) bool {
	return w >= 2 && w <= maxConvRows && (item == 1 || item == 2 || item == 4 || item == 8)
}

// splitStream transposes n channels of w item-byte items at s into w rows,
// stride bytes apart from d on (DS -> SD), with streaming stores from the
// first channel whose destinations are 32-byte aligned on; the few before
// it and the tail use the generic kernels. It reports false, doing nothing,
// without AVX2 or when the rows cannot all be aligned together.
func splitStream(d []byte, stride int, s []byte, n, w, item int) bool {
	a := addr(d)
	if !useAVX2 || a%uintptr(item) != 0 || stride%32 != 0 {
		return false
	}
	head := min(int((32-a%32)%32)/item, n)
	ds := stride / item
	transposeGo(d, s, ds, w, head, w, item)
	done := head + splitRows(d[head*item:], stride, s[head*w*item:], n-head, w, item, true)
	transposeGo(d[done*item:], s[done*w*item:], ds, w, n-done, w, item)
	return true
}

// mergeStream is the inverse of splitStream (SD -> DS): it interleaves n
// channels of the rows rows of s, stride bytes apart, into d, with
// streaming stores from the first channel at a 32-byte boundary of d on. It
// reports false, doing nothing, without AVX2 or when no channel starts at a
// 32-byte boundary.
func mergeStream(d, s []byte, stride, n, rows, item int) bool {
	if !useAVX2 {
		return false
	}
	a, head := addr(d), 0
	for (a+uintptr(head*rows*item))%32 != 0 {
		if head++; head == 32 {
			return false
		}
	}
	head = min(head, n)
	ss := stride / item
	transposeGo(d, s, rows, ss, rows, head, item)
	done := head + mergeRows(d[head*rows*item:], s[head*item:], stride, n-head, rows, item, true)
	transposeGo(d[done*rows*item:], s[done*item:], rows, ss, rows, n-done, item)
	return true
}

// deint3 splits n channels of (channel, 3 rows) uint16 triples at s into the
// rows d0, d1 and d2 (each at least 2n bytes): element k of channel i goes to
// dk[2i:2i+2]. It is DS -> SD of a kernel-4 conv state.
func deint3(d0, d1, d2, s []byte, n int) {
	d0, d1, d2, s = d0[:2*n], d1[:2*n], d2[:2*n], s[:6*n]
	le := binary.LittleEndian
	i := 0
	for ; i+4 <= n; i += 4 {
		in := s[6*i : 6*i+24]
		w0, w1, w2 := le.Uint64(in[0:]), le.Uint64(in[8:]), le.Uint64(in[16:])
		// w0 = c0r0 c0r1 c0r2 c1r0 | w1 = c1r1 c1r2 c2r0 c2r1 | w2 = c2r2 c3r0 c3r1 c3r2
		// (channel c, row r; 16 bits each, low first)
		row0 := w0&0xffff | (w0>>48)<<16 | ((w1>>32)&0xffff)<<32 | ((w2>>16)&0xffff)<<48
		row1 := (w0>>16)&0xffff | (w1&0xffff)<<16 | (w1>>48)<<32 | ((w2>>32)&0xffff)<<48
		row2 := (w0>>32)&0xffff | ((w1>>16)&0xffff)<<16 | (w2&0xffff)<<32 | (w2>>48)<<48
		le.PutUint64(d0[2*i:], row0)
		le.PutUint64(d1[2*i:], row1)
		le.PutUint64(d2[2*i:], row2)
	}
	for ; i < n; i++ {
		copy(d0[2*i:2*i+2], s[6*i:])
		copy(d1[2*i:2*i+2], s[6*i+2:])
		copy(d2[2*i:2*i+2], s[6*i+4:])
	}
}

// int3 is the inverse of deint3: it interleaves n channels of the rows s0, s1
// and s2 into (channel, 3 rows) triples at d. It is SD -> DS of a kernel-4
// conv state.
func int3(d, s0, s1, s2 []byte, n int) {
	d, s0, s1, s2 = d[:6*n], s0[:2*n], s1[:2*n], s2[:2*n]
	le := binary.LittleEndian
	i := 0
	for ; i+4 <= n; i += 4 {
		a, b, e := le.Uint64(s0[2*i:]), le.Uint64(s1[2*i:]), le.Uint64(s2[2*i:])
		// a = c0r0..c3r0, b = c0r1..c3r1, e = c0r2..c3r2
		w0 := a&0xffff | (b&0xffff)<<16 | (e&0xffff)<<32 | ((a>>16)&0xffff)<<48
		w1 := (b>>16)&0xffff | ((e>>16)&0xffff)<<16 | ((a>>32)&0xffff)<<32 | ((b>>32)&0xffff)<<48
		w2 := (e>>32)&0xffff | (a>>48)<<16 | (b>>48)<<32 | (e>>48)<<48
		out := d[6*i : 6*i+24]
		le.PutUint64(out[0:], w0)
		le.PutUint64(out[8:], w1)
		le.PutUint64(out[16:], w2)
	}
	for ; i < n; i++ {
		copy(d[6*i:6*i+2], s0[2*i:])
		copy(d[6*i+2:6*i+4], s1[2*i:])
		copy(d[6*i+4:6*i+6], s2[2*i:])
	}
}
