// Package transporttest is the conformance suite for transport backends.
//
// A backend's test supplies an Env and calls Run:
//
//	func TestMyBackend(t *testing.T) { transporttest.Run(t, myEnv{}) }
//
// Every subtest checks behavior of the transport.Transport contract: data is
// moved byte-exact, bounds are checked before anything is posted, a
// notification sent after a batch completed arrives after its data, failures
// and cancellation settle every batch, nothing hangs (generous deadlines turn
// hangs into failures) and nothing leaks. No subtest asserts on timing.
package transporttest
