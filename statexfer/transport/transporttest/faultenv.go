package transporttest

import (
	"testing"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// FaultsEnv returns an Env whose transports are inner's wrapped by
// transport.WithFaults with a plan that injects nothing, so a backend can
// check that the wrapper is a faithful pass-through over it. Kill kills the
// wrapped transport through inner.
func FaultsEnv(inner Env) Env { return faultsEnv{inner} }

type faultsEnv struct{ inner Env }

func (e faultsEnv) New(t *testing.T, h transport.Handlers) transport.Transport {
	plan := transport.NewFaultPlan(0)
	return transport.WithFaults(e.inner.New(t, plan.Handlers(h)), plan)
}

func (e faultsEnv) Kill(t *testing.T, tr transport.Transport) bool {
	f, ok := tr.(*transport.Faulty)
	if !ok {
		t.Fatalf("FaultsEnv.Kill: %T is not a *transport.Faulty", tr)
	}
	return e.inner.Kill(t, f.Inner())
}
