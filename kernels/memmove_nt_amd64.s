#include "textflag.h"

// func copyNT(dst, src *byte, n int)
//
// copyNT copies n >= 128 bytes from src to dst, which do not overlap, with
// non-temporal stores. It loads the first and the last 64 bytes, copies the
// body from the first 64-byte boundary of dst on with unaligned 32-byte
// loads and VMOVNTDQ stores, 256 bytes per iteration (prefetching the source
// 1 KiB ahead with PREFETCHNTA) then 64, fences the streaming stores
// with SFENCE and stores the first and last 64 bytes with plain stores
// (they may overwrite bytes of the body with the same values).
TEXT ·copyNT(SB), NOSPLIT, $0-24
	MOVQ	dst+0(FP), DI
	MOVQ	src+8(FP), SI
	MOVQ	n+16(FP), BX
	VMOVDQU	(SI), Y8
	VMOVDQU	32(SI), Y9
	VMOVDQU	-64(SI)(BX*1), Y10
	VMOVDQU	-32(SI)(BX*1), Y11
	MOVQ	DI, R8             // start of dst
	LEAQ	(DI)(BX*1), R9     // end of dst
	// Skip to the next 64-byte boundary of dst (0 to 63 bytes).
	LEAQ	63(DI), DI
	ANDQ	$-64, DI
	MOVQ	DI, CX
	SUBQ	R8, CX
	ADDQ	CX, SI
	SUBQ	CX, BX
	CMPQ	BX, $256
	JB	loop64

loop256:
	PREFETCHNTA	1024(SI)
	PREFETCHNTA	1088(SI)
	PREFETCHNTA	1152(SI)
	PREFETCHNTA	1216(SI)
	VMOVDQU	(SI), Y0
	VMOVDQU	32(SI), Y1
	VMOVDQU	64(SI), Y2
	VMOVDQU	96(SI), Y3
	VMOVDQU	128(SI), Y4
	VMOVDQU	160(SI), Y5
	VMOVDQU	192(SI), Y6
	VMOVDQU	224(SI), Y7
	VMOVNTDQ	Y0, (DI)
	VMOVNTDQ	Y1, 32(DI)
	VMOVNTDQ	Y2, 64(DI)
	VMOVNTDQ	Y3, 96(DI)
	VMOVNTDQ	Y4, 128(DI)
	VMOVNTDQ	Y5, 160(DI)
	VMOVNTDQ	Y6, 192(DI)
	VMOVNTDQ	Y7, 224(DI)
	ADDQ	$256, SI
	ADDQ	$256, DI
	SUBQ	$256, BX
	CMPQ	BX, $256
	JAE	loop256

loop64:
	CMPQ	BX, $64
	JB	done
	VMOVDQU	(SI), Y0
	VMOVDQU	32(SI), Y1
	VMOVNTDQ	Y0, (DI)
	VMOVNTDQ	Y1, 32(DI)
	ADDQ	$64, SI
	ADDQ	$64, DI
	SUBQ	$64, BX
	JMP	loop64

done:
	SFENCE
	VMOVDQU	Y8, (R8)
	VMOVDQU	Y9, 32(R8)
	VMOVDQU	Y10, -64(R9)
	VMOVDQU	Y11, -32(R9)
	VZEROUPPER
	RET

// func copyNTLines(dst, src *byte, n int)
//
// copyNTLines copies n bytes, a multiple of 64, from src to dst, which is
// 64-byte aligned, with non-temporal stores and no fence: a caller copying
// many small pieces fences once after the last with sfence.
TEXT ·copyNTLines(SB), NOSPLIT, $0-24
	MOVQ	dst+0(FP), DI
	MOVQ	src+8(FP), SI
	MOVQ	n+16(FP), BX
	SHRQ	$6, BX
	JZ	lines_done

lines_loop:
	VMOVDQU	(SI), Y0
	VMOVDQU	32(SI), Y1
	VMOVNTDQ	Y0, (DI)
	VMOVNTDQ	Y1, 32(DI)
	ADDQ	$64, SI
	ADDQ	$64, DI
	DECQ	BX
	JNZ	lines_loop
	VZEROUPPER

lines_done:
	RET

// func sfence()
TEXT ·sfence(SB), NOSPLIT, $0-0
	SFENCE
	RET
