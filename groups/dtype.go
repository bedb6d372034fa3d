package groups

import (
	"fmt"
	"strings"
)

// DType is the element type of a cache tensor.
type DType uint8

// Element types. The zero value is invalid so that a forgotten field is caught.
const (
	DTypeInvalid DType = iota
	BF16
	FP16
	FP32
	FP8E4M3
	FP8E5M2
	UInt8
)

var dtypeNames = [...]string{
	DTypeInvalid: "invalid",
	BF16:         "bf16",
	FP16:         "fp16",
	FP32:         "fp32",
	FP8E4M3:      "fp8_e4m3",
	FP8E5M2:      "fp8_e5m2",
	UInt8:        "uint8",
}

// Size is the size of one element in bytes (0 for DTypeInvalid).
func (d DType) Size() int {
	switch d {
	case BF16, FP16:
		return 2
	case FP32:
		return 4
	case FP8E4M3, FP8E5M2, UInt8:
		return 1
	}
	return 0
}

// IsFP8 reports whether d is one of the 8-bit float formats.
func (d DType) IsFP8() bool { return d == FP8E4M3 || d == FP8E5M2 }

func (d DType) String() string {
	if int(d) < len(dtypeNames) {
		return dtypeNames[d]
	}
	return fmt.Sprintf("dtype(%d)", uint8(d))
}

// ParseDType accepts our names and the spellings found in Hugging Face
// configs and vLLM flags (bfloat16, float32, fp8, ...).
func ParseDType(s string) (DType, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "bf16", "bfloat16", "torch.bfloat16":
		return BF16, nil
	case "fp16", "float16", "half", "torch.float16":
		return FP16, nil
	case "fp32", "float32", "float", "torch.float32":
		return FP32, nil
	case "fp8", "fp8_e4m3", "float8_e4m3fn", "e4m3":
		return FP8E4M3, nil
	case "fp8_e5m2", "float8_e5m2", "e5m2":
		return FP8E5M2, nil
	case "uint8", "u8":
		return UInt8, nil
	}
	return DTypeInvalid, fmt.Errorf("%w: unknown dtype %q", ErrInvalidSpec, s)
}

// MarshalText implements encoding.TextMarshaler.
func (d DType) MarshalText() ([]byte, error) {
	if d == DTypeInvalid || int(d) >= len(dtypeNames) {
		return nil, fmt.Errorf("%w: cannot encode dtype %d", ErrInvalidSpec, uint8(d))
	}
	return []byte(d.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *DType) UnmarshalText(b []byte) error {
	v, err := ParseDType(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}
