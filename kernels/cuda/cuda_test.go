package cuda

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/kernels"
	"github.com/hybridxfer/hybridxfer/kernels/kerneltest"
	"pgregory.net/rapid"
)

// openOrSkip opens device 0 or skips the test with the reason.
func openOrSkip(tb testing.TB) *Engine {
	tb.Helper()
	e, err := Open(0)
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			tb.Fatalf("Open failed without wrapping ErrUnavailable: %v", err)
		}
		tb.Skipf("no CUDA here: %v", err)
	}
	tb.Cleanup(func() {
		if err := e.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return e.(*Engine)
}

// TestOpen checks that Open either works or says why with ErrUnavailable,
// and that bad ordinals are refused.
func TestOpen(t *testing.T) {
	for _, ord := range []int{-1, 1 << 20} {
		if e, err := Open(ord); !errors.Is(err, ErrUnavailable) {
			if e != nil {
				e.Close()
			}
			t.Errorf("Open(%d) = %v, want ErrUnavailable", ord, err)
		}
	}
	e, err := Open(0)
	if err != nil {
		if !errors.Is(err, ErrUnavailable) || !strings.HasPrefix(err.Error(), "cuda: unavailable: ") {
			t.Fatalf("Open(0) = %q, want an ErrUnavailable with a reason", err)
		}
		t.Logf("no CUDA here: %v", err)
		return
	}
	if !strings.HasPrefix(e.Name(), "cuda:0") {
		t.Errorf("Name() = %q", e.Name())
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Alloc(1); !errors.Is(err, kernels.ErrClosed) {
		t.Errorf("Alloc after Close = %v, want ErrClosed", err)
	}
}

func TestErrorStrings(t *testing.T) {
	err := error(&Error{Func: "cuMemAlloc_v2", Code: 2, Name: "CUDA_ERROR_OUT_OF_MEMORY"})
	if got, want := err.Error(), "cuda: cuMemAlloc_v2: CUDA_ERROR_OUT_OF_MEMORY (2)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	err = &CompileError{Func: "nvrtcCompileProgram", Code: 6, Name: "NVRTC_ERROR_COMPILATION", Log: "line 1: oops"}
	if got := err.Error(); !strings.Contains(got, "NVRTC_ERROR_COMPILATION (6)") || !strings.HasSuffix(got, "line 1: oops") {
		t.Errorf("Error() = %q", got)
	}
}

// TestEncodeOps checks the host side of the copy kernel: records cover the
// same bytes as the ops, no record is longer than opChunk, none is empty.
func TestEncodeOps(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		c := kerneltest.DrawCopyCase(rt, 3*opChunk)
		if kerneltest.ValidateOps(c.Ops, c.DstLen, c.SrcLen, false, 0) != nil {
			return
		}
		rec := encodeOps(c.Ops)
		var ops []kernels.CopyOp
		for len(rec) > 0 {
			var v [3]int64
			for i := range v {
				for k := 7; k >= 0; k-- {
					v[i] = v[i]<<8 | int64(rec[i*8+k])
				}
			}
			if v[2] <= 0 || v[2] > opChunk {
				rt.Fatalf("record of %d bytes", v[2])
			}
			ops = append(ops, kernels.CopyOp{Dst: v[0], Src: v[1], Len: v[2]})
			rec = rec[opRecordBytes:]
		}
		src := kerneltest.Fill(c.SrcLen, 1)
		a, b := make([]byte, c.DstLen), make([]byte, c.DstLen)
		kerneltest.Copy(a, src, c.Ops)
		kerneltest.Copy(b, src, ops)
		if !bytes.Equal(a, b) {
			rt.Fatalf("records copy different bytes")
		}
	})
}

// TestConformance runs the engine property suite (engine == reference) on
// the GPU.
func TestConformance(t *testing.T) {
	e := openOrSkip(t)
	foreign, _ := kernels.NewCPU().Alloc(16)
	kerneltest.Conformance(t, e, 1<<16, foreign)
}

// TestMatchesCPU runs realistic shapes through both engines: CUDA == CPU ==
// reference.
func TestMatchesCPU(t *testing.T) {
	e := openOrSkip(t)
	cpu := kernels.Default()
	rng := rand.New(rand.NewPCG(3, 4))
	const size = 8 << 20
	src := kerneltest.Fill(size, 5)
	run := func(name string, f func(eng kernels.Engine, dst, src kernels.Buffer) error, ref func(dst, src []byte)) {
		t.Run(name, func(t *testing.T) {
			var outs [][]byte
			for _, eng := range []kernels.Engine{e, cpu} {
				d, err := eng.Alloc(size)
				if err != nil {
					t.Fatal(err)
				}
				s, err := eng.Alloc(size)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Upload(0, src); err != nil {
					t.Fatal(err)
				}
				if err := f(eng, d, s); err != nil {
					t.Fatalf("%s: %v", eng.Name(), err)
				}
				if err := eng.Sync(); err != nil {
					t.Fatal(err)
				}
				out := make([]byte, size)
				if err := d.Download(0, out); err != nil {
					t.Fatal(err)
				}
				outs = append(outs, out)
				d.Free()
				s.Free()
			}
			want := make([]byte, size)
			ref(want, src)
			if !bytes.Equal(outs[0], want) || !bytes.Equal(outs[1], want) {
				t.Fatalf("cuda==ref %v, cpu==ref %v", bytes.Equal(outs[0], want), bytes.Equal(outs[1], want))
			}
		})
	}
	// A gather of odd-sized, oddly aligned ranges, and a few huge ops.
	var ranges []kernels.Range
	var n int64
	for n < size/2 {
		r := kernels.Range{Off: rng.Int64N(size / 2), Len: rng.Int64N(20000)}
		ranges = append(ranges, r)
		n += r.Len
	}
	gather := kernels.GatherOps(ranges, 3)
	gather = gather[:len(gather)-1]
	huge := []kernels.CopyOp{{Dst: 1, Src: 17, Len: 3 << 20}, {Dst: 4 << 20, Src: 0, Len: 4<<20 - 5}}
	for name, ops := range map[string][]kernels.CopyOp{"gather": gather, "huge": huge} {
		run("Copy/"+name, func(eng kernels.Engine, d, s kernels.Buffer) error { return eng.Copy(d, s, ops) },
			func(d, s []byte) { kerneltest.Copy(d, s, ops) })
	}
	for name, tr := range map[string]kernels.Transpose{
		"HNDToNHD":  kernels.HNDToNHD(16, 16, 256).Batched(64, 64<<10, 64<<10),
		"NHDToHND":  kernels.NHDToHND(8, 16, 192).Batched(64, 24<<10, 24<<10).At(0, 64),
		"DSToSD":    kernels.DSToSD(8192, 3, 2).Batched(64, 48<<10, 48<<10),
		"SDToDS":    kernels.SDToDS(4099, 4, 4).Batched(16, 4099*16, 4099*16),
		"odd items": kernels.Transpose{Batches: 7, Rows: 33, Cols: 65, ItemBytes: 6, SrcOff: 1, DstOff: 2, SrcBatchStride: 33 * 65 * 6, DstBatchStride: 33*65*6 + 1},
		"bytes":     kernels.DSToSD(1000, 77, 1),
	} {
		run("Transpose/"+name, func(eng kernels.Engine, d, s kernels.Buffer) error { return eng.Transpose(d, s, tr) },
			func(d, s []byte) { kerneltest.Transpose(d, s, tr) })
	}
}

// TestMapHost: host staging on a GPU. A gather from device memory into
// page-locked host memory (device to host, as P's staging does) and a
// scatter back into device memory (host to device, as D's does) through
// MapHost buffers, checked against the CPU reference, and the host range
// unregistered by Free.
func TestMapHost(t *testing.T) {
	e := openOrSkip(t)
	rng := rand.New(rand.NewPCG(1, 2))
	src := make([]byte, 1<<20)
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	dev, err := e.Alloc(int64(len(src)))
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Upload(0, src); err != nil {
		t.Fatal(err)
	}
	host := make([]byte, 1<<19)
	hb, err := e.MapHost(host)
	if err != nil {
		t.Fatal(err)
	}
	gather := []kernels.CopyOp{{Dst: 0, Src: 4096, Len: 100000}, {Dst: 100000, Src: 700001, Len: 12345}, {Dst: 200000, Src: 3, Len: 65536}}
	if err := e.Copy(hb, dev, gather); err != nil {
		t.Fatal(err)
	}
	if err := e.Sync(); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, len(host))
	kerneltest.Copy(want, src, gather)
	if !bytes.Equal(host, want) {
		t.Fatal("device-to-host gather into mapped host memory differs from the reference")
	}
	back, err := e.Alloc(int64(len(src)))
	if err != nil {
		t.Fatal(err)
	}
	scatter := []kernels.CopyOp{{Dst: 500000, Src: 0, Len: 100000}, {Dst: 7, Src: 100000, Len: 12345}}
	if err := e.Copy(back, hb, scatter); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(src))
	if err := back.Download(0, got); err != nil {
		t.Fatal(err)
	}
	wantBack := make([]byte, len(src))
	kerneltest.Copy(wantBack, host, scatter)
	if !bytes.Equal(got, wantBack) {
		t.Fatal("host-to-device scatter from mapped host memory differs from the reference")
	}
	if err := hb.Free(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.MapHost(host); err != nil { // unregistered: registers again
		t.Fatalf("MapHost after Free: %v", err)
	}
}
