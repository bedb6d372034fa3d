package ucx

import (
	"testing"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/hybridxfer/hybridxfer/statexfer/transport/transporttest"
)

// conformanceEnv runs the suite in ErrModePeer: the suite requires that the
// death or close of a remote transport be reported (PeerFailed,
// ErrDisconnected), which UCX only detects with peer error handling. Data
// between two transports of this process then moves on the mapped path
// (the endpoints' lanes are tcp).
type conformanceEnv struct{ cfg Config }

func (e conformanceEnv) New(t *testing.T, h transport.Handlers) transport.Transport {
	tr, err := New(e.cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// Kill closes the transport: in ErrModePeer its endpoints are force-closed,
// which the remote side sees as a broken connection, as if the process had
// died. (TestTwoProcessKill kills a real process.)
func (conformanceEnv) Kill(t *testing.T, tr transport.Transport) bool {
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	return true
}

func TestConformance(t *testing.T) {
	transporttest.Run(t, conformanceEnv{cfg: Config{ErrMode: ErrModePeer}})
}
