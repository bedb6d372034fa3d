package ucx

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

func fakeHostEnv() hostEnv {
	ifaces := []netIface{
		{Name: "lo", Loopback: true, Prefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128")}},
		{Name: "eth0", Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/24"), netip.MustParsePrefix("fd00::2/64")}},
		{Name: "ib0", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.1.0.5/16")}},
	}
	names := map[string][]netip.Addr{
		"localhost": {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")},
		"node1":     {netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("10.1.0.5"), netip.MustParseAddr("198.51.100.9")},
		"elsewhere": {netip.MustParseAddr("198.51.100.9")},
	}
	return hostEnv{
		ifaces: func() ([]netIface, error) { return ifaces, nil },
		lookup: func(_ context.Context, h string) ([]netip.Addr, error) {
			if a, ok := names[h]; ok {
				return a, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: h, IsNotFound: true}
		},
	}
}

func TestNetDevicesFor(t *testing.T) {
	env := fakeHostEnv()
	for host, want := range map[string]string{
		"127.0.0.1":        "lo",
		"127.0.1.1":        "lo", // loopback prefix, not assigned exactly
		"::1":              "lo",
		"[::1]":            "lo",
		"192.0.2.2":        "eth0",
		"::ffff:192.0.2.2": "eth0",
		"fd00::2":          "eth0",
		"localhost":        "lo",
		"node1":            "eth0,ib0",
	} {
		got, err := env.netDevicesFor(host)
		if err != nil || got != want {
			t.Errorf("NetDevicesFor(%q) = %q, %v; want %q", host, got, err, want)
		}
	}
	for host, want := range map[string]error{
		"0.0.0.0":      ErrWildcardHost,
		"::":           ErrWildcardHost,
		"[::]":         ErrWildcardHost,
		"":             ErrWildcardHost,
		"192.0.2.3":    ErrHostNotLocal, // same subnet, another host
		"198.51.100.9": ErrHostNotLocal,
		"elsewhere":    ErrHostNotLocal,
		"nosuchhost":   ErrHostLookup,
	} {
		_, err := env.netDevicesFor(host)
		var he *HostError
		if !errors.Is(err, want) || !errors.As(err, &he) || he.Host != host {
			t.Errorf("NetDevicesFor(%q) error %v, want %v in a *HostError", host, err, want)
		}
		if want == ErrWildcardHost && !strings.Contains(err.Error(), "--host") {
			t.Errorf("wildcard error %q does not tell what to do", err)
		}
	}
}

// TestNetDevicesForReal asks the real interfaces: 127.0.0.1 is on the
// loopback interface.
func TestNetDevicesForReal(t *testing.T) {
	var lo string
	list, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range list {
		if ifc.Flags&net.FlagLoopback != 0 {
			lo = ifc.Name
		}
	}
	if lo == "" {
		t.Skip("no loopback interface")
	}
	if got, err := NetDevicesFor("127.0.0.1"); err != nil || got != lo {
		t.Fatalf("NetDevicesFor(127.0.0.1) = %q, %v; want %q", got, err, lo)
	}
	if _, err := NetDevicesFor("0.0.0.0"); !errors.Is(err, ErrWildcardHost) {
		t.Fatalf("0.0.0.0: %v", err)
	}
	var c Config
	if err := c.RestrictToHost("127.0.0.1"); err != nil || c.UCX["NET_DEVICES"] != lo {
		t.Fatalf("RestrictToHost: %v %v", err, c.UCX)
	}
}

func TestResolveOptions(t *testing.T) {
	env := map[string]string{"UCX_NET_DEVICES": "eth0", "UCX_TCP_PORT_RANGE": "1-2", "UCX_TLS": "tcp"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	got, yielded := resolveOptions(map[string]string{
		"NET_DEVICES":    "lo",  // env wins
		"TCP_PORT_RANGE": "3-4", // env wins
		"TCP_SNDBUF":     "64k", // no env: passed without prefix
		"TLS":            "shm", // config wins over UCX_TLS
		"POSIX_DIR":      "/x",  // passed as DIR
	}, lookup)
	want := []ucxOption{
		{"POSIX_DIR", "DIR", "/x"},
		{"TCP_SNDBUF", "SNDBUF", "64k"},
		{"TLS", "TLS", "shm"},
	}
	if len(got) != len(want) {
		t.Fatalf("options %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("option %d = %v, want %v", i, got[i], want[i])
		}
	}
	if strings.Join(yielded, ",") != "NET_DEVICES,TCP_PORT_RANGE" {
		t.Errorf("yielded %v", yielded)
	}
}

// TestTCPSegSizeReachesUCX shows that the tcp segment options reach UCX
// under the names this package passes (docs/transport.md recommends 1 MiB
// on every instance): UCX refuses a receive segment smaller than the send
// segment, so the refused pairs fail New and UCX's defaults, and an
// operator's pair in Config, do not.
func TestTCPSegSizeReachesUCX(t *testing.T) {
	for _, k := range []string{"UCX_TCP_TX_SEG_SIZE", "UCX_TCP_RX_SEG_SIZE"} {
		if _, ok := os.LookupEnv(k); ok {
			t.Skipf("%s is set in the environment", k)
		}
	}
	for _, tc := range []struct {
		name string
		opts map[string]string
		ok   bool
	}{
		{"default", map[string]string{"TLS": "tcp"}, true},
		{"operator pair", map[string]string{"TLS": "tcp", "TCP_TX_SEG_SIZE": "64k", "TCP_RX_SEG_SIZE": "64k"}, true},
		{"rx below tx", map[string]string{"TLS": "tcp", "TCP_TX_SEG_SIZE": "2m", "TCP_RX_SEG_SIZE": "1m"}, false},
		{"tx above the default rx", map[string]string{"TLS": "tcp", "TCP_TX_SEG_SIZE": "2m"}, false},
		{"recommended pair", map[string]string{"TLS": "tcp", "TCP_TX_SEG_SIZE": "1m", "TCP_RX_SEG_SIZE": "1m"}, true},
	} {
		tr, err := New(Config{UCX: tc.opts}, transport.Handlers{})
		if err == nil {
			tr.Close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("%s: New error %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
