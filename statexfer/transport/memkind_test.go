package transport_test

import (
	"errors"
	"testing"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

func TestParseMemKind(t *testing.T) {
	for _, c := range []struct {
		in   string
		want transport.MemKind
		str  string
	}{
		{"host", transport.HostMemory, "host"},
		{"", transport.HostMemory, "host"},
		{"host-pinned", transport.PinnedMemory, "host-pinned"},
		{"device", transport.DeviceMemory(0), "device:0"},
		{"device:3", transport.DeviceMemory(3), "device:3"},
	} {
		k, err := transport.ParseMemKind(c.in)
		if err != nil || k != c.want || k.String() != c.str {
			t.Errorf("ParseMemKind(%q) = %v %q %v, want %v %q", c.in, k, k.String(), err, c.want, c.str)
		}
		if back, err := transport.ParseMemKind(k.String()); err != nil || back != k {
			t.Errorf("%q does not parse back: %v %v", k.String(), back, err)
		}
	}
	for _, bad := range []string{"gpu", "device:", "device:-1", "device:x", "device:99999"} {
		if _, err := transport.ParseMemKind(bad); !errors.Is(err, transport.ErrMemKind) {
			t.Errorf("ParseMemKind(%q): %v, want ErrMemKind", bad, err)
		}
	}
	if err := (transport.MemKind{Type: transport.Host, Device: 2}).Valid(); !errors.Is(err, transport.ErrMemKind) {
		t.Errorf("host memory with a device ordinal: %v", err)
	}
}
