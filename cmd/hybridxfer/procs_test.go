package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// instance is one hybridxfer process of a test fleet.
type instance struct {
	name string
	args []string
	url  string
	cmd  *exec.Cmd
}

type fleet struct {
	t     *testing.T
	bin   string
	ps    []*instance
	ds    []*instance
	proxy *instance
	// started is every process start ran, for an instance in the fleet's
	// roles or not (a monolithic instance to compare with), restarts
	// included: stopAll stops them all.
	started []*exec.Cmd
}

func (f *fleet) start(in *instance, extra ...string) {
	f.t.Helper()
	cmd := exec.Command(f.bin, append(append([]string{}, in.args...), extra...)...)
	cmd.Env = workerEnv()
	cmd.Stdout = io.Discard
	tail := &tailWriter{max: 4 << 10} // what to show when it never gets healthy
	cmd.Stderr = tail
	if os.Getenv("FAULTS_VERBOSE") != "" {
		cmd.Stderr = io.MultiWriter(tail, &prefixWriter{prefix: "[" + in.name + "] ", w: os.Stderr})
	}
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	in.cmd = cmd
	f.started = append(f.started, cmd)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := waitHealthy(ctx, in.url, nil); err != nil {
		f.t.Fatalf("%s: %v; its last log lines:\n%s", in.name, err, tail)
	}
}

func (f *fleet) kill(in *instance) {
	in.cmd.Process.Signal(syscall.SIGKILL)
	in.cmd.Wait()
}

// stopAll kills every process start ran that has not been waited for.
func (f *fleet) stopAll() {
	for _, cmd := range f.started {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGCONT)
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
}

func newInstance(t *testing.T, name string, args ...string) *instance {
	return newInstancePorts(t, name, 1, args...)
}

// newInstancePorts is newInstance for a process that listens on n
// consecutive ports from its --port (serve --data-parallel-size n): all
// of them free when picked.
func newInstancePorts(t *testing.T, name string, n int, args ...string) *instance {
	port, err := freePorts(n)
	if err != nil {
		t.Fatal(err)
	}
	return &instance{name: name, url: fmt.Sprintf("http://127.0.0.1:%d", port), args: append(args, "--port", fmt.Sprint(port))}
}

// freePorts returns a port p with p..p+n-1 free on 127.0.0.1 when it
// looked.
func freePorts(n int) (int, error) {
	for range 100 {
		p, err := freePort()
		if err != nil {
			return 0, err
		}
		free := true
		for i := 1; i < n && free; i++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+i))
			if err != nil {
				free = false
				continue
			}
			l.Close()
		}
		if free {
			return p, nil
		}
	}
	return 0, fmt.Errorf("no %d consecutive free ports", n)
}
