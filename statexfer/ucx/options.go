package ucx

import (
	"log/slog"
	"os"
	"sort"
	"strings"
)

// ucxOption is one option handed to ucp_config_modify.
type ucxOption struct {
	Key   string // as in Config.UCX and the environment, without UCX_
	Name  string // as passed to ucp_config_modify
	Value string
}

// transportPrefixes are the option-name prefixes of the UCT transports this
// package meets. UCX 1.13's ucp_config_modify keeps names it does not know
// at the UCP level and later applies them to every transport's
// configuration by bare field name: "TCP_PORT_RANGE" is silently ignored
// there, "PORT_RANGE" works (measured: the tcp listener's port then falls in
// the range). Keys of Config.UCX carry the prefix, as in the environment,
// and are passed without it.
var transportPrefixes = []string{"TCP_", "POSIX_", "SYSV_", "CMA_"}

// envWins reports whether the environment variable UCX_<key>, when set,
// takes precedence over Config.UCX[key]: the options that decide which
// network interfaces and ports UCX uses belong to the operator.
func envWins(key string) bool {
	return key == "NET_DEVICES" || strings.HasPrefix(key, "TCP_")
}

// optionName is the name ucp_config_modify needs for key.
func optionName(key string) string {
	for _, p := range transportPrefixes {
		if strings.HasPrefix(key, p) && len(key) > len(p) {
			return key[len(p):]
		}
	}
	return key
}

// resolveOptions turns Config.UCX into the options to apply, in key order:
// entries whose key envWins and whose UCX_<key> is set in the environment
// are left out (UCX has read the environment already; ucp_config_modify
// would override it). lookup is os.LookupEnv outside tests.
func resolveOptions(opts map[string]string, lookup func(string) (string, bool)) (out []ucxOption, yielded []string) {
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := opts[k]
		if envWins(k) {
			if ev, ok := lookup("UCX_" + k); ok {
				yielded = append(yielded, k)
				slog.Info("ucx: environment overrides configured option",
					"option", "UCX_"+k, "env", ev, "config", v)
				continue
			}
		}
		out = append(out, ucxOption{Key: k, Name: optionName(k), Value: v})
	}
	return out, yielded
}

// optionSet reports whether key is set in opts or in the environment.
func optionSet(opts map[string]string, key string) bool {
	return optionSetIn(opts, key, os.LookupEnv)
}

// optionSetIn is optionSet with the environment's lookup given; a
// transport option also counts when opts names it bare (ucp_config_modify's
// form, "TX_SEG_SIZE" for "TCP_TX_SEG_SIZE").
func optionSetIn(opts map[string]string, key string, lookup func(string) (string, bool)) bool {
	if _, ok := opts[key]; ok {
		return true
	}
	if bare := optionName(key); bare != key {
		if _, ok := opts[bare]; ok {
			return true
		}
	}
	_, ok := lookup("UCX_" + key)
	return ok
}

// TCPSegSize is the tcp transport's segment size this package gives UCX
// (TCP_TX_SEG_SIZE and TCP_RX_SEG_SIZE) unless the operator or the Config
// set either. UCX 1.13's default, 8 KiB, returns an emulated get's data
// (tcp has no RDMA) in 8 KiB active messages: measured on loopback, raw
// gets then move 0.25-0.38 of one TCP stream, and 0.98-1.01 with 1 MiB
// segments (docs/transport.md). UCX's tcp transport takes its send and
// receive buffers of this size from its memory pools.
//
// UCX 1.13 does not negotiate segment sizes between peers, and mixed sizes
// were not tested: every hybridxfer process uses the same default, and an
// operator who sets UCX_TCP_TX_SEG_SIZE or UCX_TCP_RX_SEG_SIZE on one
// instance should set them on all.
const TCPSegSize = "1m"

// tcpSegDefaults are the segment-size options to add to the Config's:
// both at TCPSegSize when neither is set in opts or the environment, none
// otherwise (UCX refuses a receive segment smaller than the send segment,
// so the pair is the operator's once one of them is).
func tcpSegDefaults(opts map[string]string, lookup func(string) (string, bool)) []ucxOption {
	keys := []string{"TCP_TX_SEG_SIZE", "TCP_RX_SEG_SIZE"}
	for _, k := range keys {
		if optionSetIn(opts, k, lookup) {
			return nil
		}
	}
	out := make([]ucxOption, len(keys))
	for i, k := range keys {
		out[i] = ucxOption{Key: k, Name: optionName(k), Value: TCPSegSize}
	}
	return out
}
