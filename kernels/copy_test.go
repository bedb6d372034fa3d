package kernels_test

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/hybridxfer/hybridxfer/kernels"
	"github.com/hybridxfer/hybridxfer/kernels/kerneltest"
	"pgregory.net/rapid"
)

// modes runs f serially, with the parallel path forced (several uneven
// workers, tiny shares), with the streaming paths forced for every size
// (serial and parallel) and with the assembly kernels turned off, so that
// every property covers the byte splitting and each copy and transpose
// kernel.
func modes(t *testing.T, f func(t *testing.T)) {
	t.Run("serial", f)
	t.Run("parallel", func(t *testing.T) {
		defer kernels.SetTuning(1, 1, 7)()
		f(t)
	})
	t.Run("stream", func(t *testing.T) {
		defer kernels.SetStreamThreshold(0)()
		f(t)
	})
	t.Run("stream-parallel", func(t *testing.T) {
		defer kernels.SetStreamThreshold(0)()
		defer kernels.SetTuning(1, 1, 3)()
		f(t)
	})
	t.Run("noavx2", func(t *testing.T) {
		defer kernels.SetAVX2(false)()
		defer kernels.SetStreamThreshold(0)()
		f(t)
	})
}

func TestCPUConformance(t *testing.T) {
	modes(t, func(t *testing.T) {
		other, _ := kernels.NewCPU().Alloc(16)
		kerneltest.Conformance(t, kernels.NewCPU(), 4096, other)
	})
}

// TestCopyMatchesReference runs random op lists between two slices that may
// be parts of one array, overlapping or not, and compares the whole array
// with the reference.
func TestCopyMatchesReference(t *testing.T) {
	modes(t, func(t *testing.T) {
		rapid.Check(t, func(rt *rapid.T) {
			c := kerneltest.DrawCopyCase(rt, 2048)
			size := 2 * max(c.DstLen, c.SrcLen)
			d0 := rapid.Int64Range(0, size-c.DstLen).Draw(rt, "dstAt")
			s0 := rapid.Int64Range(0, size-c.SrcLen).Draw(rt, "srcAt")
			arr, want := kerneltest.Fill(size, 7), kerneltest.Fill(size, 7)
			alias := c.DstLen > 0 && c.SrcLen > 0 && d0 < s0+c.SrcLen && s0 < d0+c.DstLen
			werr := kerneltest.ValidateOps(c.Ops, c.DstLen, c.SrcLen, alias, s0-d0)
			if werr == nil {
				kerneltest.Copy(want[d0:d0+c.DstLen], kerneltest.Fill(size, 7)[s0:s0+c.SrcLen], c.Ops)
			}
			err := kernels.Copy(arr[d0:d0+c.DstLen], arr[s0:s0+c.SrcLen], c.Ops)
			if !kerneltest.SameClass(err, werr) {
				rt.Fatalf("Copy = %v, reference says %v", err, werr)
			}
			if !bytes.Equal(arr, want) {
				rt.Fatalf("memory differs from the reference")
			}
		})
	})
}

// TestCopyLargeOps splits few large ops over many workers: the cuts fall
// inside ops.
func TestCopyLargeOps(t *testing.T) {
	defer kernels.SetTuning(1, 1, 5)()
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.Int64Range(1, 1<<16).Draw(rt, "n")
		src := kerneltest.Fill(n, 1)
		dst := make([]byte, n+3)
		ops := []kernels.CopyOp{{Dst: 3, Src: 0, Len: n - n/3}, {Dst: 3 + n - n/3, Src: n - n/3, Len: n / 3}}
		if err := kernels.Copy(dst, src, ops); err != nil {
			rt.Fatal(err)
		}
		if !bytes.Equal(dst[3:], src) || dst[0]|dst[1]|dst[2] != 0 {
			rt.Fatalf("large copy differs")
		}
	})
}

func TestCopyErrors(t *testing.T) {
	buf := make([]byte, 64)
	for _, tc := range []struct {
		name     string
		dst, src []byte
		ops      []kernels.CopyOp
		want     error
	}{
		{"negative len", buf[:32], buf[32:], []kernels.CopyOp{{Len: -1}}, kernels.ErrInvalid},
		{"negative dst", buf[:32], buf[32:], []kernels.CopyOp{{Dst: -1, Len: 1}}, kernels.ErrInvalid},
		{"negative src", buf[:32], buf[32:], []kernels.CopyOp{{Src: -8, Len: 1}}, kernels.ErrInvalid},
		{"dst past end", buf[:32], buf[32:], []kernels.CopyOp{{Dst: 31, Len: 2}}, kernels.ErrOutOfRange},
		{"src past end", buf[:32], buf[32:], []kernels.CopyOp{{Src: 32, Len: 1}}, kernels.ErrOutOfRange},
		{"empty op past end", buf[:32], buf[32:], []kernels.CopyOp{{Src: 33}}, kernels.ErrOutOfRange},
		{"overflow", buf[:32], buf[32:], []kernels.CopyOp{{Src: math.MaxInt64, Len: math.MaxInt64}}, kernels.ErrOutOfRange},
		{"overflow dst", buf[:32], buf[32:], []kernels.CopyOp{{Dst: math.MaxInt64 - 1, Len: 2}}, kernels.ErrOutOfRange},
		{"dst overlap", buf[:32], buf[32:], []kernels.CopyOp{{Dst: 4, Len: 8}, {Dst: 0, Src: 8, Len: 5}}, kernels.ErrOverlap},
		{"dst overlap sorted", buf[:32], buf[32:], []kernels.CopyOp{{Dst: 0, Len: 8}, {Dst: 7, Src: 8, Len: 1}}, kernels.ErrOverlap},
		{"same slice", buf, buf, []kernels.CopyOp{{Dst: 0, Src: 4, Len: 8}}, kernels.ErrOverlap},
		{"same op", buf, buf, []kernels.CopyOp{{Dst: 9, Src: 9, Len: 1}}, kernels.ErrOverlap},
		{"shifted slices", buf[8:], buf[:40], []kernels.CopyOp{{Dst: 0, Src: 0, Len: 4}, {Dst: 16, Src: 8, Len: 4}}, kernels.ErrOverlap},
		{"other op's dst", buf, buf, []kernels.CopyOp{{Dst: 0, Src: 32, Len: 8}, {Dst: 40, Src: 4, Len: 2}}, kernels.ErrOverlap},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range buf {
				buf[i] = byte(i)
			}
			before := bytes.Clone(buf)
			err := kernels.Copy(tc.dst, tc.src, tc.ops)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Copy = %v, want %v", err, tc.want)
			}
			var oe *kernels.OpError
			if !errors.As(err, &oe) {
				t.Fatalf("Copy = %T, want *OpError", err)
			}
			if !bytes.Equal(buf, before) {
				t.Fatalf("failed Copy wrote memory")
			}
		})
	}
	// Disjoint ranges of one slice are fine.
	if err := kernels.Copy(buf, buf, []kernels.CopyOp{{Dst: 0, Src: 32, Len: 32}}); err != nil {
		t.Fatal(err)
	}
	if err := kernels.Copy(nil, nil, []kernels.CopyOp{{}}); err != nil {
		t.Fatal(err)
	}
}

// FuzzCopyOps decodes sizes, an aliasing mode and ops from bytes and checks
// that Copy never panics and agrees with the reference.
func FuzzCopyOps(f *testing.F) {
	f.Add([]byte{16, 16, 0, 0, 0, 4})
	f.Add([]byte{32, 8, 1, 4, 0, 8, 12, 2, 4})
	f.Add([]byte{200, 200, 2, 0, 100, 100, 0x80, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 3 {
			return
		}
		dstLen, srcLen, mode := int64(data[0]), int64(data[1]), data[2]
		var ops []kernels.CopyOp
		for p := data[3:]; len(p) >= 3; p = p[3:] {
			op := kernels.CopyOp{Dst: int64(int8(p[0])), Src: int64(int8(p[1])), Len: int64(int8(p[2]))}
			if mode&4 != 0 && op.Len < 0 {
				op.Len = math.MaxInt64 + op.Len + 1 // huge lengths
			}
			ops = append(ops, op)
		}
		if mode&8 != 0 {
			defer kernels.SetTuning(1, 1, 3)()
		}
		size := dstLen + srcLen
		var d0, s0 int64 // separate halves of one array
		switch mode % 4 {
		case 1: // the same slice
			size = max(dstLen, srcLen)
			srcLen, dstLen = size, size
		case 2: // src starts inside dst
			s0 = dstLen / 2
		}
		arr, want := kerneltest.Fill(size, mode), kerneltest.Fill(size, mode)
		if mode%4 == 0 {
			s0 = dstLen
		}
		dst, src := arr[d0:d0+dstLen], arr[s0:s0+srcLen]
		alias := len(dst) > 0 && len(src) > 0 && d0 < s0+srcLen && s0 < d0+dstLen
		werr := kerneltest.ValidateOps(ops, dstLen, srcLen, alias, s0-d0)
		if werr == nil {
			kerneltest.Copy(want[d0:d0+dstLen], kerneltest.Fill(size, mode)[s0:s0+srcLen], ops)
		}
		err := kernels.Copy(dst, src, ops)
		if !kerneltest.SameClass(err, werr) {
			t.Fatalf("Copy = %v, reference says %v", err, werr)
		}
		if !bytes.Equal(arr, want) {
			t.Fatalf("memory differs from the reference")
		}
	})
}
