package ucx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"
)

// Errors of NetDevicesFor, wrapped by *HostError.
var (
	// ErrWildcardHost: the host is a wildcard (0.0.0.0, ::) or empty, which
	// names every interface; UCX would listen on all of them.
	ErrWildcardHost = errors.New("ucx: wildcard host: UCX would listen on every interface; give --host the interface address")
	// ErrHostNotLocal: no local network interface holds the host's address.
	ErrHostNotLocal = errors.New("ucx: no local network interface holds the host address")
	// ErrHostLookup: the host name did not resolve.
	ErrHostLookup = errors.New("ucx: host lookup failed")
)

// HostError is an error of NetDevicesFor: Host as given, the addresses it
// resolved to (if any) and the cause (a sentinel above, possibly wrapping
// the resolver's or the interface listing's error).
type HostError struct {
	Host  string
	Addrs []netip.Addr
	Err   error
}

func (e *HostError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "host %q", e.Host)
	if len(e.Addrs) > 0 {
		fmt.Fprintf(&b, " (%v)", e.Addrs)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *HostError) Unwrap() error { return e.Err }

// netIface is what NetDevicesFor needs to know of a local interface.
type netIface struct {
	Name     string
	Loopback bool
	Prefixes []netip.Prefix
}

// hostEnv lets tests replace the interface listing and the resolver.
type hostEnv struct {
	ifaces func() ([]netIface, error)
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
}

var defaultHostEnv = hostEnv{ifaces: localIfaces, lookup: lookupHost}

func localIfaces() ([]netIface, error) {
	list, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]netIface, 0, len(list))
	for _, ifc := range list {
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", ifc.Name, err)
		}
		ni := netIface{Name: ifc.Name, Loopback: ifc.Flags&net.FlagLoopback != 0}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ones, _ := ipn.Mask.Size()
			ni.Prefixes = append(ni.Prefixes, netip.PrefixFrom(ip.Unmap(), ones))
		}
		out = append(out, ni)
	}
	return out, nil
}

func lookupHost(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// NetDevicesFor returns the value of UCX_NET_DEVICES (Config.UCX
// "NET_DEVICES") that keeps UCX's network transports on the interface that
// holds host: host is an IP literal (IPv6 with or without brackets and
// zone) or a name, which is resolved; the result is the name of the local
// interface whose address it is ("lo" for 127.0.0.1, "eth0"), or a
// comma-separated sorted list when a name resolves to addresses of several
// interfaces (addresses of a name that no interface holds are skipped). A
// loopback address that is not assigned exactly (127.0.1.1) maps to the
// loopback interface whose prefix contains it.
//
// UCX opens one tcp listener per selected interface, bound to that
// interface's address (of the family UCX_TCP_AF_PRIO prefers, IPv4 first by
// default), so for an interface with several addresses the listener may be
// on another address of the same interface than host.
//
// Errors are *HostError wrapping ErrWildcardHost (empty host, 0.0.0.0, ::),
// ErrHostNotLocal or ErrHostLookup.
func NetDevicesFor(host string) (string, error) {
	return defaultHostEnv.netDevicesFor(host)
}

func (env hostEnv) netDevicesFor(host string) (string, error) {
	h := strings.TrimSpace(host)
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	if h == "" {
		return "", &HostError{Host: host, Err: ErrWildcardHost}
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(h); err == nil {
		addrs = []netip.Addr{a}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := env.lookup(ctx, h)
		if err != nil {
			return "", &HostError{Host: host, Err: fmt.Errorf("%w: %w", ErrHostLookup, err)}
		}
		if len(res) == 0 {
			return "", &HostError{Host: host, Err: ErrHostLookup}
		}
		addrs = res
	}
	for i, a := range addrs {
		addrs[i] = a.Unmap().WithZone("")
		if addrs[i].IsUnspecified() {
			return "", &HostError{Host: host, Addrs: addrs, Err: ErrWildcardHost}
		}
	}
	ifaces, err := env.ifaces()
	if err != nil {
		return "", &HostError{Host: host, Addrs: addrs, Err: fmt.Errorf("%w: listing interfaces: %w", ErrHostNotLocal, err)}
	}
	names := map[string]bool{}
	for _, a := range addrs {
		if n := ifaceFor(ifaces, a); n != "" {
			names[n] = true
		}
	}
	if len(names) == 0 {
		return "", &HostError{Host: host, Addrs: addrs, Err: ErrHostNotLocal}
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	sort.Strings(out)
	return strings.Join(out, ","), nil
}

// ifaceFor returns the interface that holds a, or "".
func ifaceFor(ifaces []netIface, a netip.Addr) string {
	for _, ifc := range ifaces {
		for _, p := range ifc.Prefixes {
			if p.Addr() == a {
				return ifc.Name
			}
		}
	}
	if a.IsLoopback() {
		for _, ifc := range ifaces {
			if !ifc.Loopback {
				continue
			}
			for _, p := range ifc.Prefixes {
				if p.Contains(a) {
					return ifc.Name
				}
			}
		}
	}
	return ""
}

// RestrictToHost sets c.UCX["NET_DEVICES"] to NetDevicesFor(host), so that
// the transport's tcp listeners and connections use only the interface
// that holds host. An operator's UCX_NET_DEVICES environment variable still
// wins (see Config.UCX). It returns NetDevicesFor's error and leaves c
// unchanged on error.
func (c *Config) RestrictToHost(host string) error {
	dev, err := NetDevicesFor(host)
	if err != nil {
		return err
	}
	m := make(map[string]string, len(c.UCX)+1)
	for k, v := range c.UCX {
		m[k] = v
	}
	m["NET_DEVICES"] = dev
	c.UCX = m
	return nil
}
