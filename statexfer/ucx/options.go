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
	if _, ok := opts[key]; ok {
		return true
	}
	_, ok := os.LookupEnv("UCX_" + key)
	return ok
}
