package transporttest

import (
	"testing"
	"time"

	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

// Env makes transports of the backend under test.
type Env interface {
	// New returns a new transport delivering events to h. Run closes every
	// transport it makes (Close must tolerate being called twice); New may
	// register its own cleanup too.
	New(t *testing.T, h transport.Handlers) transport.Transport
	// Kill ends tr abruptly, as if its process or endpoint died, and
	// reports whether the backend supports that; when it returns false the
	// subtests that need it are skipped.
	Kill(t *testing.T, tr transport.Transport) bool
}

// settleWait bounds every wait in the suite. It is a safety net that turns
// a hang into a failure, never a performance assertion.
const settleWait = 60 * time.Second

// testCase is one conformance subtest.
type testCase struct {
	name string
	run  func(t *testing.T, env Env)
}

// cases lists the subtests in the order Run runs them.
var cases = []testCase{
	{"AllocRegisterDesc", testAllocRegisterDesc},
	{"MemoryKinds", testMemoryKinds},
	{"ReadRandom", testReadRandom},
	{"WriteRandom", testWriteRandom},
	{"ReadRanges", testReadRanges},
	{"LargeOps", testLargeOps},
	{"BoundsRejected", testBoundsRejected},
	{"NotifyOrder", testNotifyOrder},
	{"NotifyAfterWrite", testNotifyAfterWrite},
	{"NotifyAfterRead", testNotifyAfterRead},
	{"PartialFailure", testPartialFailure},
	{"RemoteClose", testRemoteClose},
	{"RemoteKill", testRemoteKill},
	{"Cancel", testCancel},
	{"Concurrent", testConcurrent},
	{"PeerCloseWhileBusy", testPeerCloseWhileBusy},
	{"CloseWhileBusy", testCloseWhileBusy},
	{"NotifyClosedPeer", testNotifyClosedPeer},
	{"PeerIDs", testPeerIDs},
}

// Run runs the conformance suite against env, one subtest per behavior.
// Subtests run one at a time (some count goroutines).
func Run(t *testing.T, env Env) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, env) })
	}
}
