package kernels

import "encoding/binary"

// Conv-state transposes of 2-byte elements with 3 rows (conv kernel 4, no
// speculative tokens: the common DS<->SD case) move four channels per step
// with three 8-byte loads and three 8-byte stores instead of twelve 2-byte
// ones. Both are exact permutations; the generic path handles every other
// shape and the tails.

// dsToSD3 transposes rows [r0, r1) of a (rows x 3) matrix of uint16 at s
// into the (3 x rows) matrix at d (byte slices of the whole matrices). It
// returns the first row it did not handle.
func dsToSD3(d, s []byte, rows, r0, r1 int) int {
	le := binary.LittleEndian
	d0, d1, d2 := d[:2*rows], d[2*rows:4*rows], d[4*rows:6*rows]
	r := r0
	for ; r+4 <= r1; r += 4 {
		in := s[6*r : 6*r+24]
		w0, w1, w2 := le.Uint64(in[0:]), le.Uint64(in[8:]), le.Uint64(in[16:])
		// w0 = c0r0 c0r1 c0r2 c1r0 | w1 = c1r1 c1r2 c2r0 c2r1 | w2 = c2r2 c3r0 c3r1 c3r2
		// (channel c, row r; 16 bits each, low first)
		row0 := w0&0xffff | (w0>>48)<<16 | ((w1>>32)&0xffff)<<32 | ((w2>>16)&0xffff)<<48
		row1 := (w0>>16)&0xffff | (w1&0xffff)<<16 | (w1>>48)<<32 | ((w2>>32)&0xffff)<<48
		row2 := (w0>>32)&0xffff | ((w1>>16)&0xffff)<<16 | (w2&0xffff)<<32 | (w2>>48)<<48
		le.PutUint64(d0[2*r:], row0)
		le.PutUint64(d1[2*r:], row1)
		le.PutUint64(d2[2*r:], row2)
	}
	return r
}

// sdToDS3 is the inverse: columns [c0, c1) of the (3 x cols) matrix at s
// into the (cols x 3) matrix at d. It returns the first column it did not
// handle.
func sdToDS3(d, s []byte, cols, c0, c1 int) int {
	le := binary.LittleEndian
	s0, s1, s2 := s[:2*cols], s[2*cols:4*cols], s[4*cols:6*cols]
	c := c0
	for ; c+4 <= c1; c += 4 {
		a, b, e := le.Uint64(s0[2*c:]), le.Uint64(s1[2*c:]), le.Uint64(s2[2*c:])
		// a = c0r0..c3r0, b = c0r1..c3r1, e = c0r2..c3r2
		w0 := a&0xffff | (b&0xffff)<<16 | (e&0xffff)<<32 | ((a>>16)&0xffff)<<48
		w1 := (b>>16)&0xffff | ((e>>16)&0xffff)<<16 | ((a>>32)&0xffff)<<32 | ((b>>32)&0xffff)<<48
		w2 := (e>>32)&0xffff | (a>>48)<<16 | (b>>48)<<32 | (e>>48)<<48
		out := d[6*c : 6*c+24]
		le.PutUint64(out[0:], w0)
		le.PutUint64(out[8:], w1)
		le.PutUint64(out[16:], w2)
	}
	return c
}
