package main

import (
	"fmt"

	"github.com/hybridxfer/hybridxfer/kernels/cuda"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/spf13/pflag"
)

// memoryFlags are --memory-kind and --staging: where a rank's cache lives
// and how state leaves it. They cross process boundaries in worker specs.
type memoryFlags struct {
	Kind    string `json:"memory_kind,omitempty"`
	Staging string `json:"staging,omitempty"`
}

func (f *memoryFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.Kind, "memory-kind", "host", "cache memory: host, or device[:N] (GPU N: needs the CUDA engine, and UCX built with CUDA unless --staging host)")
	fs.StringVar(&f.Staging, "staging", "registered", "registered: the cache is registered with the transport (direct or staged reads); host: the cache stays unregistered in the engine's memory and state moves through host staging buffers only (device to host on P, host to host, host to device on D; every plan staged)")
}

// config parses the flags and opens the engine the kind needs: the CPU
// engine for host memory (nil: the default), the CUDA engine of the device
// for device memory (an error naming what is missing on a machine without
// one). The caller closes a non-nil Engine.
func (f memoryFlags) config() (statexfer.MemoryConfig, error) {
	kind, err := transport.ParseMemKind(f.Kind)
	if err != nil {
		return statexfer.MemoryConfig{}, fmt.Errorf("%w --memory-kind: %w", errFlag, err)
	}
	mc := statexfer.MemoryConfig{Kind: kind}
	switch f.Staging {
	case "", "registered":
	case "host":
		mc.HostStaging = true
	default:
		return mc, fmt.Errorf("%w --staging %q (want registered or host)", errFlag, f.Staging)
	}
	if kind.Type == transport.Device {
		e, err := cuda.Open(kind.Device)
		if err != nil {
			return mc, fmt.Errorf("--memory-kind %s: %w", kind, err)
		}
		mc.Engine = e
	}
	return mc, nil
}

// memoryFlagsOf is the flags that give mc (its engine reopened from them).
func memoryFlagsOf(mc statexfer.MemoryConfig) memoryFlags {
	f := memoryFlags{Kind: mc.Kind.String(), Staging: "registered"}
	if mc.HostStaging {
		f.Staging = "host"
	}
	return f
}
