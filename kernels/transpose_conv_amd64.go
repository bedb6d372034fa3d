//go:build amd64

package kernels

//go:generate go run gen_conv_amd64.go

// The shuffle kernels (transpose_conv_amd64.s, declared in
// transpose_convk_amd64.go; both written by gen_conv_amd64.go) split
// channels of w items into w rows (DS -> SD of a conv state) or interleave
// w rows into channels (SD -> DS), 32/item channels per block, with the
// masks below; the NT variants store with non-temporal stores.

// deintMasks[w][i] and interMasks[w][i] are the shuffle masks of splitW<w>
// and mergeW<w> for items of 1<<i bytes.
var deintMasks, interMasks [maxConvRows + 1][4][]byte

func init() {
	for w := 2; w <= maxConvRows; w++ {
		for i := range 4 {
			deintMasks[w][i] = makeDeintMasks(w, 1<<i)
			interMasks[w][i] = makeInterMasks(w, 1<<i)
		}
	}
}

// makeDeintMasks returns splitW<w>'s masks for w rows of item-byte items: mask
// (k, p), 32 bytes at 32*(k*w+p), moves the bytes of row k out of input
// vector p (bytes 16p to 16p+16 of the 16w bytes of a lane) to their place
// in the lane's 16 bytes of row k, and zeroes the others.
func makeDeintMasks(w, item int) []byte {
	m := make([]byte, 32*w*w)
	for k := range w {
		for p := range w {
			mask := m[32*(k*w+p):][:32]
			for x := range 16 {
				g := (x/item*w+k)*item + x%item // byte of the lane's input
				mask[x] = 0x80
				if g/16 == p {
					mask[x] = byte(g % 16)
				}
				mask[16+x] = mask[x]
			}
		}
	}
	return m
}

// makeInterMasks returns mergeW<w>'s masks for w rows of item-byte items: mask
// (q, k), 32 bytes at 32*(q*w+k), moves the bytes of row k (16 per lane)
// that belong in output vector q (bytes 16q to 16q+16 of the lane's 16w
// bytes of output) to their place, and zeroes the others.
func makeInterMasks(w, item int) []byte {
	m := make([]byte, 32*w*w)
	for q := range w {
		for k := range w {
			mask := m[32*(q*w+k):][:32]
			for x := range 16 {
				e := (16*q + x) / item // element of the lane's output
				mask[x] = 0x80
				if e%w == k {
					mask[x] = byte(e/w*item + x%item)
				}
				mask[16+x] = mask[x]
			}
		}
	}
	return m
}

// splitRows runs splitW<w> (splitW<w>NT when nt) on the first channels of s, a
// multiple of 32/item of them, at most n, and returns how many it did. s
// holds channels of w items; row k of the destination starts at
// d[k*stride:].
func splitRows(d []byte, stride int, s []byte, n, w, item int, nt bool) int {
	per := 32 / item // channels per block
	blocks := n / per
	if !useAVX2 || blocks == 0 {
		return 0
	}
	_ = d[(w-1)*stride+blocks*32-1] // bounds of the last row and of s
	_ = s[blocks*32*w-1]
	masks := &deintMasks[w][log2(item)][0]
	kernel := splitKernels[w]
	if nt {
		kernel = splitNTKernels[w]
	}
	for b := 0; b < blocks; {
		c := min(blocks-b, convChunk/per)
		kernel(&d[32*b], stride, &s[32*w*b], c, masks)
		b += c
	}
	return blocks * per
}

// mergeRows runs mergeW<w> (mergeW<w>NT when nt) on the first channels of the w rows
// of s, stride bytes apart, like splitRows.
func mergeRows(d, s []byte, stride, n, w, item int, nt bool) int {
	per := 32 / item
	blocks := n / per
	if !useAVX2 || blocks == 0 {
		return 0
	}
	_ = d[blocks*32*w-1]
	_ = s[(w-1)*stride+blocks*32-1]
	masks := &interMasks[w][log2(item)][0]
	kernel := mergeKernels[w]
	if nt {
		kernel = mergeNTKernels[w]
	}
	for b := 0; b < blocks; {
		c := min(blocks-b, convChunk/per)
		kernel(&d[32*w*b], &s[32*b], stride, c, masks)
		b += c
	}
	return blocks * per
}

// log2 returns the base-2 logarithm of item: 1, 2, 4 or 8.
func log2(item int) int {
	switch item {
	case 1:
		return 0
	case 2:
		return 1
	case 4:
		return 2
	}
	return 3
}
