package transport

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MemType is where registered memory lives.
type MemType uint8

// Memory types. Host is ordinary host memory (the default: the zero
// MemKind). HostPinned is host memory a device can reach by DMA, what host
// staging of device caches uses; a backend without a device engine serves
// it as host memory. Device is the memory of one accelerator (MemKind.Device
// is its ordinal).
const (
	Host MemType = iota
	HostPinned
	Device
)

// MemKind names the memory a range is registered in: a type and, for
// Device, the device ordinal. It travels in the handshake metadata so a
// reader knows what it reads.
type MemKind struct {
	Type   MemType `msgpack:"t"`
	Device int     `msgpack:"d"`
}

// HostMemory is the default kind: host memory.
var HostMemory = MemKind{}

// PinnedMemory is host-pinned staging memory.
var PinnedMemory = MemKind{Type: HostPinned}

// DeviceMemory is the memory of device ordinal.
func DeviceMemory(ordinal int) MemKind { return MemKind{Type: Device, Device: ordinal} }

// ErrMemKind is returned for a memory kind that cannot be parsed or is out
// of range.
var ErrMemKind = errors.New("transport: bad memory kind")

// IsHost reports whether the memory is host memory (pinned or not): bytes
// the CPU reads and writes through Memory.Bytes.
func (k MemKind) IsHost() bool { return k.Type == Host || k.Type == HostPinned }

// Valid checks the kind's fields.
func (k MemKind) Valid() error {
	switch {
	case k.Type > Device:
		return fmt.Errorf("%w: type %d", ErrMemKind, k.Type)
	case k.Type != Device && k.Device != 0:
		return fmt.Errorf("%w: %s memory with device ordinal %d", ErrMemKind, k.Type, k.Device)
	case k.Device < 0 || k.Device > 1<<10:
		return fmt.Errorf("%w: device ordinal %d", ErrMemKind, k.Device)
	}
	return nil
}

// String is "host", "host-pinned" or "device:N".
func (k MemKind) String() string {
	if k.Type == Device {
		return "device:" + strconv.Itoa(k.Device)
	}
	return k.Type.String()
}

// String names the type.
func (t MemType) String() string {
	switch t {
	case Host:
		return "host"
	case HostPinned:
		return "host-pinned"
	case Device:
		return "device"
	}
	return "memtype(" + strconv.Itoa(int(t)) + ")"
}

// ParseMemKind parses "host", "host-pinned", "device" (ordinal 0) or
// "device:N".
func ParseMemKind(s string) (MemKind, error) {
	switch s {
	case "host", "":
		return HostMemory, nil
	case "host-pinned", "pinned":
		return PinnedMemory, nil
	case "device":
		return DeviceMemory(0), nil
	}
	if n, ok := strings.CutPrefix(s, "device:"); ok {
		d, err := strconv.Atoi(n)
		if err == nil {
			k := DeviceMemory(d)
			if err := k.Valid(); err != nil {
				return MemKind{}, err
			}
			return k, nil
		}
	}
	return MemKind{}, fmt.Errorf("%w: %q (want host, host-pinned, device or device:N)", ErrMemKind, s)
}

// KindError is an Alloc refused because the backend cannot register
// memory of Kind: Why says what is missing (a UCX built without CUDA
// support, no device engine). It wraps ErrUnsupported.
type KindError struct {
	Backend string
	Kind    MemKind
	Why     string
}

func (e *KindError) Error() string {
	return fmt.Sprintf("transport: %s: cannot register %s memory: %s", e.Backend, e.Kind, e.Why)
}

// Unwrap makes the error match ErrUnsupported.
func (e *KindError) Unwrap() error { return ErrUnsupported }
