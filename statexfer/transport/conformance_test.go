package transport_test

import (
	"testing"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/hybridxfer/hybridxfer/statexfer/transport/transporttest"
)

// inprocEnv runs the conformance suite on the in-process backend.
type inprocEnv struct{}

func (inprocEnv) New(t *testing.T, h transport.Handlers) transport.Transport {
	return transport.NewInproc(h)
}

func (inprocEnv) Kill(t *testing.T, tr transport.Transport) bool {
	tr.(*transport.Inproc).Kill()
	return true
}

func TestInproc(t *testing.T) {
	transporttest.Run(t, inprocEnv{})
}

// TestFaultyConformance runs the suite through a fault wrapper that injects
// nothing.
func TestFaultyConformance(t *testing.T) {
	transporttest.Run(t, transporttest.FaultsEnv(inprocEnv{}))
}
