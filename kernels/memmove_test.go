package kernels_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/hybridxfer/hybridxfer/kernels"
)

// guard is the byte around every destination range: a copy that writes one
// byte too many or too few changes it.
const guard = 0xa5

// refCopy is the reference: one byte at a time, forward (the ranges it is
// given do not overlap).
func refCopy(dst, src []byte) {
	n := min(len(dst), len(src))
	for i := 0; i < n; i++ {
		dst[i] = src[i]
	}
}

// memmoves are the copies under test.
var memmoves = []struct {
	name string
	f    func(dst, src []byte)
}{
	{"Memmove", kernels.Memmove},
	{"MemmoveBulk", kernels.MemmoveBulk},
	{"MemmoveNT", kernels.MemmoveNT},
	{"CopyPlain", kernels.CopyPlain},
}

// copyCase copies n bytes from offset so of a random source to offset do of
// a guard-filled destination (each past a 64-byte margin) with f and checks
// the whole destination buffer against the reference.
type copyCase struct {
	src, dst, want []byte
}

func newCopyCase(maxLen int) *copyCase {
	c := &copyCase{
		src:  make([]byte, maxLen+192),
		dst:  make([]byte, maxLen+256),
		want: make([]byte, maxLen+256),
	}
	rng := rand.New(rand.NewPCG(7, uint64(maxLen)))
	for i := range c.src {
		c.src[i] = byte(rng.Uint32())
	}
	return c
}

func (c *copyCase) check(t *testing.T, f func(dst, src []byte), do, so, n int) {
	t.Helper()
	// Align the buffers' margins to 64 bytes so that do and so are the
	// offsets from a cache line.
	d0 := 64 + (64-int(addrOf(c.dst))&63)&63
	s0 := (64 - int(addrOf(c.src))&63) & 63
	dst, want := c.dst[:d0+do+n+64], c.want[:d0+do+n+64]
	for i := range dst {
		dst[i], want[i] = guard, guard
	}
	src := c.src[s0+so : s0+so+n]
	refCopy(want[d0+do:d0+do+n], src)
	f(dst[d0+do:d0+do+n], src)
	if !bytes.Equal(dst, want) {
		i := firstDiff(dst, want)
		t.Fatalf("dst align %d src align %d len %d: byte %d (dst offset %d) = %#x, want %#x",
			do, so, n, i, i-d0-do, dst[i], want[i])
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// TestMemmoveAlignments checks every destination and source alignment within
// a cache line for lengths around the streaming copy's unroll widths and
// chunk and around StreamThreshold; the long lengths cover fewer
// alignment pairs.
func TestMemmoveAlignments(t *testing.T) {
	short := []int{0, 1, 2, 7, 31, 32, 33, 63, 64, 65, 127, 128, 129, 191, 192, 255, 256, 257,
		319, 320, 383, 511, 512, 513, 1000, 4095, 4096, 4097}
	long := []int{kernels.BulkStreamThreshold - 1, kernels.BulkStreamThreshold, kernels.BulkStreamThreshold + 1, kernels.StreamThreshold - 1, kernels.StreamThreshold, kernels.StreamThreshold + 1,
		65536 + 17, 1<<20 - 1, 1 << 20, 1<<20 + 127, 1<<20 + 129, 2<<20 + 4097, 3<<20 + 64}
	for _, m := range memmoves {
		t.Run(m.name, func(t *testing.T) {
			c := newCopyCase(long[len(long)-1])
			// The race detector makes every byte of the reference loops
			// cost ~50x: it checks every seventh alignment pair.
			stride := 1
			if raceEnabled {
				stride = 7
			}
			for _, n := range short {
				for do := 0; do < 64; do += stride {
					for so := 0; so < 64; so += stride {
						c.check(t, m.f, do, so, n)
					}
				}
			}
			for _, n := range long {
				step := 1
				if n > 1<<16 {
					step = 9 * stride
				}
				for do := 0; do < 64; do += step {
					for _, so := range []int{0, 1, 8, 31, 32, 33, 63, do} {
						c.check(t, m.f, do, so, n)
					}
				}
			}
		})
	}
}

// TestMemmoveBelowThreshold runs Memmove with the streaming copy taking
// every length, then with it turned off.
func TestMemmoveBelowThreshold(t *testing.T) {
	for _, mode := range []string{"stream-all", "noavx2"} {
		t.Run(mode, func(t *testing.T) {
			defer kernels.SetStreamThreshold(0)()
			if mode == "noavx2" {
				defer kernels.SetAVX2(false)()
			}
			c := newCopyCase(70000)
			for _, n := range []int{0, 1, 31, 32, 33, 127, 128, 129, 255, 256, 257, 4095, 4096, 65536 + 17} {
				for do := 0; do < 64; do += 3 {
					for so := 0; so < 64; so += 5 {
						c.check(t, kernels.Memmove, do, so, n)
					}
				}
			}
		})
	}
}

// TestMemmoveLengths checks that the copies move min(len(dst), len(src))
// bytes.
func TestMemmoveLengths(t *testing.T) {
	defer kernels.SetStreamThreshold(0)()
	for _, m := range memmoves {
		for _, lens := range [][2]int{{300, 1000}, {1000, 300}, {0, 500}, {500, 0}} {
			src := bytes.Repeat([]byte{7}, lens[1])
			dst := make([]byte, lens[0]+64)
			m.f(dst[:lens[0]], src)
			n := min(lens[0], lens[1])
			if bytes.Count(dst, []byte{7}) != n || (n > 0 && dst[n-1] != 7) {
				t.Fatalf("%s dst %d src %d: copied %d bytes, want %d", m.name, lens[0], lens[1], bytes.Count(dst, []byte{7}), n)
			}
		}
	}
}

// TestMemmoveOverlap checks that overlapping ranges, which the streaming copy
// leaves to copy(), get memmove's result in both directions.
func TestMemmoveOverlap(t *testing.T) {
	defer kernels.SetStreamThreshold(0)()
	for _, m := range memmoves {
		for _, n := range []int{128, 129, 1000, 5000, kernels.StreamThreshold + 3, 1<<20 + 300} {
			for _, shift := range []int{-300, -64, -1, 1, 31, 64, 257, n - 1} {
				buf := make([]byte, 2*n+600)
				for i := range buf {
					buf[i] = byte(i * 13)
				}
				want := bytes.Clone(buf)
				s0, d0 := 300, 300+shift
				copy(want[d0:d0+n], want[s0:s0+n])
				m.f(buf[d0:d0+n], buf[s0:s0+n])
				if !bytes.Equal(buf, want) {
					t.Fatalf("%s len %d shift %d: byte %d differs", m.name, n, shift, firstDiff(buf, want))
				}
			}
		}
	}
}

// FuzzMemmove copies a length drawn from the input between two drawn
// alignments with each copy and compares with the reference, guard bytes
// included.
func FuzzMemmove(f *testing.F) {
	f.Add(uint8(0), uint8(0), uint32(0))
	f.Add(uint8(1), uint8(63), uint32(127))
	f.Add(uint8(63), uint8(1), uint32(128))
	f.Add(uint8(17), uint8(5), uint32(256+63))
	f.Add(uint8(32), uint8(0), uint32(4096))
	f.Add(uint8(7), uint8(9), uint32(kernels.StreamThreshold))
	f.Add(uint8(60), uint8(3), uint32(65536+17))
	f.Add(uint8(5), uint8(11), uint32(1<<20+33))
	const maxLen = 1<<20 + 4096
	c := newCopyCase(maxLen)
	f.Fuzz(func(t *testing.T, do, so uint8, n uint32) {
		for _, m := range memmoves {
			c.check(t, m.f, int(do%64), int(so%64), int(n%(maxLen+1)))
		}
	})
}

func ExampleMemmove() {
	src := bytes.Repeat([]byte("kv"), 64<<10)
	dst := make([]byte, len(src))
	kernels.Memmove(dst, src) // streams: 128 KiB >= StreamThreshold
	fmt.Println(bytes.Equal(dst, src))
	// Output: true
}
