//go:build multinode

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The multinode test (make multinode): P and D on two "hosts", network
// namespaces this test creates and always removes, joined by a veth pair
// with private addresses; the proxy runs on D's host. State moves over
// UCX tcp across the pair. Phases: serve (no errors, no wrong answers,
// nothing held afterwards); cut the link mid-load for 8 s (past the
// transfer timeout and the lease) and restore it
// (every request answers, with 200 and the monolithic answer or a clear
// error; none hangs; nothing held once leases have expired); serve again
// (no errors: it recovered).

const (
	mnSubnet   = "10.77.%d.%d"
	mnLeaseTTL = "5s"
	mnSeed     = "4"
	mnCut      = 8 * time.Second
)

type netns struct {
	name, dev, addr string
}

// run runs a command inside ns (ip netns exec) and returns its output.
func (n netns) command(ctx context.Context, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name}, args...)...)
	cmd.Env = env
	return cmd
}

func mnRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
}

// setupHosts creates two namespaces joined by a veth pair and registers
// their removal (killing whatever still runs in them).
func setupHosts(t *testing.T) (p, d netns) {
	if os.Geteuid() != 0 {
		t.Skip("multinode: needs root to create network namespaces")
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("multinode: needs curl (Debian package curl) to reach the namespaces")
	}
	id := os.Getpid() % 200
	p = netns{name: fmt.Sprintf("hxp%d", os.Getpid()), dev: fmt.Sprintf("hxp%d", id), addr: fmt.Sprintf(mnSubnet, id, 1)}
	d = netns{name: fmt.Sprintf("hxd%d", os.Getpid()), dev: fmt.Sprintf("hxd%d", id), addr: fmt.Sprintf(mnSubnet, id, 2)}
	cleanup := func() {
		for _, n := range []netns{p, d} {
			if out, err := exec.Command("ip", "netns", "pids", n.name).Output(); err == nil {
				for _, pid := range strings.Fields(string(out)) {
					exec.Command("kill", "-9", pid).Run()
				}
			}
			exec.Command("ip", "netns", "del", n.name).Run()
		}
	}
	cleanup() // leftovers of a crashed earlier run with the same pid
	t.Cleanup(cleanup)
	mnRun(t, "ip", "netns", "add", p.name)
	mnRun(t, "ip", "netns", "add", d.name)
	mnRun(t, "ip", "link", "add", p.dev, "type", "veth", "peer", "name", d.dev)
	for _, n := range []netns{p, d} {
		mnRun(t, "ip", "link", "set", n.dev, "netns", n.name)
		mnRun(t, "ip", "-n", n.name, "addr", "add", n.addr+"/24", "dev", n.dev)
		mnRun(t, "ip", "-n", n.name, "link", "set", n.dev, "up")
		mnRun(t, "ip", "-n", n.name, "link", "set", "lo", "up")
	}
	return p, d
}

func TestMultinode(t *testing.T) {
	pHost, dHost := setupHosts(t)
	bin := buildCLI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // a hang guard
	defer cancel()
	env := func(n netns) []string {
		var out []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "UCX_") {
				out = append(out, kv)
			}
		}
		return append(out, "UCX_NET_DEVICES="+n.dev, "UCX_TLS=tcp", "UCX_WARN_UNUSED_ENV_VARS=n")
	}
	common := []string{"--model", "qwen3.5-27b", "--seed", mnSeed, "--lease-ttl", mnLeaseTTL, "--transfer-timeout", "5s"}
	start := func(n netns, name string, args ...string) {
		cmd := n.command(ctx, env(n), append([]string{bin}, args...)...)
		cmd.Stdout = nil
		if os.Getenv("MULTINODE_VERBOSE") != "" {
			cmd.Stderr = &prefixWriter{prefix: "[" + name + "] ", w: os.Stderr}
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	pURL := "http://" + pHost.addr + ":8101"
	dURL := "http://" + dHost.addr + ":8111"
	proxyURL := "http://" + dHost.addr + ":8100"
	start(pHost, "P", append([]string{"serve", "--role", "prefill", "--tp", "2", "--host", pHost.addr, "--listen", pHost.addr, "--port", "8101", "--handshake-port", "8201"}, common...)...)
	start(dHost, "D", append([]string{"serve", "--role", "decode", "--tp", "1", "--layout", "NHD", "--host", dHost.addr, "--listen", dHost.addr, "--port", "8111"}, common...)...)
	start(dHost, "proxy", "proxy", "--listen", dHost.addr, "--port", "8100", "--prefill", pURL, "--decode", dURL, "--health-interval", "200ms")
	for _, u := range []string{pURL, dURL, proxyURL} {
		waitNetnsHealthy(t, ctx, dHost, u)
	}
	bench := func(what string, extra ...string) (*serveBenchResult, error) {
		args := append([]string{bin, "bench", "serve", "--url", proxyURL, "--seed", mnSeed, "--json", "--settle", "30s", "--timeout", "3m",
			"--prompt-tokens", "24", "--max-tokens", "3"}, extra...)
		out, err := dHost.command(ctx, env(dHost), args...).Output()
		var r serveBenchResult
		if jerr := json.Unmarshal(out, &r); jerr != nil {
			t.Fatalf("%s: bench serve: %v (%v), output %q", what, jerr, err, out)
		}
		t.Logf("%s: %d ok, %d errors %v, %d wrong, pools empty after %v, TTFT p50 %.0f ms; first errors %q",
			what, r.OK, r.Errors, r.ErrorsByStatus, r.Wrong, r.PoolsEmptyAfter, r.TTFTms.P50, r.FirstErrors)
		return &r, err
	}
	if r, err := bench("across the pair", "--requests", "32", "--concurrency", "8"); err != nil || r.Errors != 0 || r.Wrong != 0 || !r.PoolsEmptyAfter {
		t.Fatalf("across the pair: %v %+v", err, r)
	}

	// Cut the link mid-load for longer than the transfer timeout and the
	// lease (5 s each), so loads in flight fail and holds expire.
	// The cut lands once 8 answers of this phase are in (the proxy's own
	// count), so requests are in flight when the link goes down.
	okSoFar := func() int {
		out, _ := dHost.command(ctx, os.Environ(), "curl", "-s", "-m", "2", proxyURL+"/metrics").Output()
		return int(metricValue(string(out), `hybridxfer_proxy_requests_total{status="200"}`))
	}
	base := okSoFar()
	cutErr := make(chan error, 1)
	go func() {
		for okSoFar() < base+8 && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		err := exec.Command("ip", "-n", pHost.name, "link", "set", pHost.dev, "down").Run()
		time.Sleep(mnCut)
		cutErr <- errors.Join(err, exec.Command("ip", "-n", pHost.name, "link", "set", pHost.dev, "up").Run())
	}()
	r, _ := bench(fmt.Sprintf("link cut for %v", mnCut), "--requests", "128", "--concurrency", "8", "--stream", "--distinct", "8")
	if err := <-cutErr; err != nil {
		t.Fatalf("cutting the link: %v", err)
	}
	if r.OK < 8 || r.Errors == 0 {
		t.Errorf("link cut: %d ok, %d errors: the cut did not land mid-load", r.OK, r.Errors)
	}
	if r.Wrong != 0 {
		t.Errorf("link cut: %d wrong answers", r.Wrong)
	}
	if r.OK+r.Errors != r.Requests {
		t.Errorf("link cut: %d ok + %d errors of %d requests", r.OK, r.Errors, r.Requests)
	}
	// Every failure is a clear error: an HTTP status with a message, or an
	// error event on the stream; none is a request the client gave up on
	// (bench's --timeout: a hang).
	if n := r.ErrorsByStatus["no_response"]; n > 0 {
		t.Errorf("link cut: %d requests got no response (hung or dropped): %q", n, r.FirstErrors)
	}
	if !r.PoolsEmptyAfter {
		t.Errorf("link cut: blocks still held after the leases expired: %+v", r.Instances)
	}
	if r, err := bench("after the link came back", "--requests", "24", "--concurrency", "6"); err != nil || r.Errors != 0 || r.Wrong != 0 || !r.PoolsEmptyAfter {
		t.Fatalf("after the link came back: %v %+v", err, r)
	}
}

// waitNetnsHealthy polls url/health from inside n until it answers 200.
func waitNetnsHealthy(t *testing.T, ctx context.Context, n netns, url string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if err := n.command(ctx, os.Environ(), "curl", "-sf", "-o", "/dev/null", "-m", "2", url+"/health").Run(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s not healthy from %s after 2 min", url, n.name)
}
