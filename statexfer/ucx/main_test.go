package ucx

import (
	"os"
	"syscall"
	"testing"
)

// envReexec is set in the environment of a test binary that TestMain
// re-executed, so that it does not loop.
const envReexec = "HYBRIDXFER_UCX_TEST_REEXEC"

// envNoNetDev keeps TestMain from setting UCX_NET_DEVICES.
const envNoNetDev = "HYBRIDXFER_UCX_TEST_NO_NETDEV"

// TestMain makes libucs leave signals to Go (UCX_HANDLE_ERRORS=none, read by
// libucs when it is loaded, so it must be in the environment at exec) and
// keeps tcp on loopback. If the environment lacks them, it re-executes the
// test binary with them set.
func TestMain(m *testing.M) {
	want := map[string]string{"UCX_HANDLE_ERRORS": "none", "UCX_NET_DEVICES": "lo"}
	if os.Getenv(envNoNetDev) == "1" {
		// A child of TestListenOnlyOnHost: UCX_NET_DEVICES stays as given.
		delete(want, "UCX_NET_DEVICES")
	}
	missing := false
	for k, v := range want {
		if _, ok := os.LookupEnv(k); !ok {
			os.Setenv(k, v)
			missing = true
		}
	}
	if missing && os.Getenv(envReexec) == "" {
		os.Setenv(envReexec, "1")
		exe, err := os.Executable()
		if err == nil {
			err = syscall.Exec(exe, os.Args, os.Environ())
		}
		// Exec failed: run with what we have; UCX still works, only crash
		// tracebacks are UCX's.
		_ = err
	}
	os.Exit(m.Run())
}
