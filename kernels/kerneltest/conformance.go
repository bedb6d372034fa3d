package kerneltest

import (
	"bytes"
	"errors"
	"testing"

	"github.com/hybridxfer/hybridxfer/kernels"
	"pgregory.net/rapid"
)

// Conformance checks that e computes what the references compute, byte for
// byte, on random copy and transpose cases with buffers of up to maxLen
// bytes, and that it rejects what they reject, leaving the destination
// untouched. foreign is a buffer of another engine, which e must refuse.
func Conformance(t *testing.T, e kernels.Engine, maxLen int64, foreign kernels.Buffer) {
	t.Run("Copy", func(t *testing.T) {
		rapid.Check(t, func(rt *rapid.T) {
			c := DrawCopyCase(rt, maxLen)
			dst, src := upload(rt, e, Fill(c.DstLen, 1)), upload(rt, e, Fill(c.SrcLen, 2))
			defer free(dst, src)
			want := Fill(c.DstLen, 1)
			werr := ValidateOps(c.Ops, c.DstLen, c.SrcLen, false, 0)
			if werr == nil {
				Copy(want, Fill(c.SrcLen, 2), c.Ops)
			}
			check(rt, e, e.Copy(dst, src, c.Ops), werr, dst, want)
		})
	})
	t.Run("CopyInPlace", func(t *testing.T) {
		rapid.Check(t, func(rt *rapid.T) {
			c := DrawAliasCase(rt, maxLen)
			buf := upload(rt, e, Fill(c.DstLen, 3))
			defer free(buf)
			want := Fill(c.DstLen, 3)
			werr := ValidateOps(c.Ops, c.DstLen, c.SrcLen, true, 0)
			if werr == nil {
				Copy(want, Fill(c.DstLen, 3), c.Ops)
			}
			check(rt, e, e.Copy(buf, buf, c.Ops), werr, buf, want)
		})
	})
	t.Run("Transpose", func(t *testing.T) {
		rapid.Check(t, func(rt *rapid.T) {
			tr, dstLen, srcLen := DrawTranspose(rt, 300)
			inPlace := rapid.IntRange(0, 7).Draw(rt, "inPlace") == 0
			if inPlace {
				dstLen = max(dstLen, srcLen)
				srcLen = dstLen
			}
			dst := upload(rt, e, Fill(dstLen, 4))
			src := dst
			if !inPlace {
				src = upload(rt, e, Fill(srcLen, 5))
				defer free(src)
			}
			defer free(dst)
			want := Fill(dstLen, 4)
			werr := ValidateTranspose(tr, dstLen, srcLen, inPlace, 0)
			if werr == nil && !inPlace {
				Transpose(want, Fill(srcLen, 5), tr)
			} else if werr == nil {
				Transpose(want, Fill(dstLen, 4), tr)
			}
			check(rt, e, e.Transpose(dst, src, tr), werr, dst, want)
		})
	})
	t.Run("Buffers", func(t *testing.T) {
		b, err := e.Alloc(16)
		if err != nil {
			t.Fatal(err)
		}
		if b.Len() != 16 {
			t.Fatalf("Len() = %d, want 16", b.Len())
		}
		zero := make([]byte, 16)
		got := make([]byte, 16)
		if err := b.Download(0, got); err != nil || !bytes.Equal(got, zero) {
			t.Fatalf("fresh buffer = %x, %v; want zeros", got, err)
		}
		for _, off := range []int64{-1, 1, 17} {
			if err := b.Upload(off, got); !errors.Is(err, kernels.ErrOutOfRange) {
				t.Errorf("Upload(%d, 16 bytes) = %v, want ErrOutOfRange", off, err)
			}
			if err := b.Download(off, got); !errors.Is(err, kernels.ErrOutOfRange) {
				t.Errorf("Download(%d, 16 bytes) = %v, want ErrOutOfRange", off, err)
			}
		}
		if _, err := e.Alloc(-1); !errors.Is(err, kernels.ErrInvalid) {
			t.Errorf("Alloc(-1) = %v, want ErrInvalid", err)
		}
		op := []kernels.CopyOp{{Len: 1}}
		if foreign != nil {
			if err := e.Copy(b, foreign, op); !errors.Is(err, kernels.ErrForeignBuffer) {
				t.Errorf("Copy from a foreign buffer = %v, want ErrForeignBuffer", err)
			}
			if err := e.Transpose(foreign, b, kernels.DSToSD(1, 1, 1)); !errors.Is(err, kernels.ErrForeignBuffer) {
				t.Errorf("Transpose to a foreign buffer = %v, want ErrForeignBuffer", err)
			}
		}
		c, err := e.Alloc(16)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Free(); err != nil {
			t.Fatal(err)
		}
		if err := e.Copy(b, c, op); !errors.Is(err, kernels.ErrClosed) {
			t.Errorf("Copy from a freed buffer = %v, want ErrClosed", err)
		}
		if err := c.Upload(0, got); !errors.Is(err, kernels.ErrClosed) {
			t.Errorf("Upload to a freed buffer = %v, want ErrClosed", err)
		}
		if err := c.Free(); !errors.Is(err, kernels.ErrClosed) {
			t.Errorf("second Free = %v, want ErrClosed", err)
		}
		if err := b.Free(); err != nil {
			t.Fatal(err)
		}
		if err := e.Sync(); err != nil {
			t.Fatal(err)
		}
	})
}

func upload(t *rapid.T, e kernels.Engine, p []byte) kernels.Buffer {
	b, err := e.Alloc(int64(len(p)))
	if err != nil {
		t.Fatalf("Alloc(%d): %v", len(p), err)
	}
	if err := b.Upload(0, p); err != nil {
		t.Fatalf("Upload: %v", err)
	}
	return b
}

func free(bs ...kernels.Buffer) {
	for _, b := range bs {
		_ = b.Free()
	}
}

// check compares the outcome of one engine call with the reference: the
// same error class and, after Sync, the expected destination bytes (the
// initial ones when the call failed).
func check(t *rapid.T, e kernels.Engine, err, want error, dst kernels.Buffer, wantBytes []byte) {
	if !SameClass(err, want) {
		t.Fatalf("error = %v, reference says %v", err, want)
	}
	if err := e.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	got := make([]byte, dst.Len())
	if err := dst.Download(0, got); err != nil {
		t.Fatalf("Download: %v", err)
	}
	if i := firstDiff(got, wantBytes); i >= 0 {
		t.Fatalf("byte %d = %#x, want %#x (of %d)", i, got[i], wantBytes[i], len(got))
	}
}

func firstDiff(a, b []byte) int {
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}
