//go:build faults

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The fault campaign (make faults): 2 prefill and 3 decode instances of
// mixed tp, direct and staged, behind the proxy, as real processes on
// 127.0.0.1, under load; one fault per phase. It prints one table and fails
// when a request hung, an answer was wrong, a request failed without a
// fault to blame, or blocks are still held anywhere once the lease bound
// has passed.

const (
	faultModel     = "qwen3.5-27b"
	faultSeed      = 5
	faultLeaseTTL  = 3 * time.Second
	faultHeartbeat = 200 * time.Millisecond
	faultWorkers   = 6
	faultPerWorker = 8
	faultTokens    = 4
	faultHangBound = 45 * time.Second // a request still unanswered then has hung
)

// phaseResult is one row of the table.
type phaseResult struct {
	fault                             string
	requests, ok, wrong, failed, hung int
	detect                            time.Duration // 0: nothing to detect or not seen
	held                              float64
	firstError                        string
}

func TestFaultCampaign(t *testing.T) {
	bin := buildCLI(t)
	f := &fleet{t: t, bin: bin}
	defer f.stopAll()
	common := []string{"--model", faultModel, "--seed", fmt.Sprint(faultSeed)}
	for i, tp := range []int{2, 1} {
		hs, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		f.ps = append(f.ps, newInstance(t, fmt.Sprintf("P%d", i), append([]string{"serve", "--role", "prefill", "--tp", fmt.Sprint(tp),
			"--handshake-port", fmt.Sprint(hs), "--lease-ttl", faultLeaseTTL.String()}, common...)...))
	}
	for i, d := range []struct {
		tp   int
		mode string
		more []string
	}{{2, "direct", nil}, {4, "staged", []string{"--layout", "NHD", "--conv-layout", "SD"}}, {1, "auto", []string{"--layout", "NHD"}}} {
		args := append([]string{"serve", "--role", "decode", "--tp", fmt.Sprint(d.tp), "--mode", d.mode, "--heartbeat-interval", faultHeartbeat.String(),
			"--transfer-timeout", "5s"}, common...)
		f.ds = append(f.ds, newInstance(t, fmt.Sprintf("D%d", i), append(args, d.more...)...))
	}
	var pURLs, dURLs []string
	for _, in := range f.ps {
		f.start(in)
		pURLs = append(pURLs, in.url)
	}
	for _, in := range f.ds {
		f.start(in)
		dURLs = append(dURLs, in.url)
	}
	f.proxy = newInstance(t, "proxy", "proxy", "--prefill", strings.Join(pURLs, ","), "--decode", strings.Join(dURLs, ","), "--health-interval", "200ms")
	f.start(f.proxy)

	ref := referenceModel(t, faultModel, faultSeed)

	phases := []struct {
		name   string
		inject func() (blame *instance, after func())
		detect func(ctx context.Context, blame *instance) bool
	}{
		{"none", nil, nil},
		{"kill -9 of P0", func() (*instance, func()) { f.kill(f.ps[0]); return f.ps[0], nil }, f.unhealthy},
		{"P0 restarted on the same ports", func() (*instance, func()) { f.start(f.ps[0]); return nil, nil }, nil},
		{"kill -9 of D1", func() (*instance, func()) { f.kill(f.ds[1]); return f.ds[1], func() { f.start(f.ds[1]) } }, f.unhealthy},
		{fmt.Sprintf("SIGSTOP of P1 for %v (> lease), then SIGCONT", faultLeaseTTL+time.Second), func() (*instance, func()) {
			f.ps[1].cmd.Process.Signal(syscall.SIGSTOP)
			time.AfterFunc(faultLeaseTTL+time.Second, func() { f.ps[1].cmd.Process.Signal(syscall.SIGCONT) })
			return f.ps[1], nil
		}, nil},
		{"D2 restarted losing 30% of its control messages", func() (*instance, func()) {
			f.kill(f.ds[2])
			f.start(f.ds[2], "--fault-drop-notify", "0.3")
			return f.ds[2], func() { f.kill(f.ds[2]); f.start(f.ds[2]) }
		}, f.leaseExpired},
	}
	var rows []phaseResult
	bad := false
	for pi, ph := range phases {
		row := phaseResult{fault: ph.name}
		var blame *instance
		var after func()
		injected := make(chan time.Time, 1)
		var detected time.Time
		var mu sync.Mutex
		firstErrAt := time.Time{}
		var wg sync.WaitGroup
		if ph.inject != nil {
			wg.Go(func() {
				time.Sleep(300 * time.Millisecond)
				at := time.Now()
				blame, after = ph.inject()
				injected <- at
				if ph.detect != nil && blame != nil {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					for ctx.Err() == nil && !ph.detect(ctx, blame) {
						time.Sleep(20 * time.Millisecond)
					}
					if ctx.Err() == nil {
						mu.Lock()
						detected = time.Now()
						mu.Unlock()
					}
				}
			})
		}
		for w := range faultWorkers {
			wg.Go(func() {
				for i := range faultPerWorker {
					prompt := fmt.Sprintf("phase %d worker %d request %d %s", pi, w, i, strings.Repeat("z", (w+i)%7))
					ctx, cancel := context.WithTimeout(context.Background(), faultHangBound)
					got, err := chat(ctx, f.proxy.url, faultModel, prompt, faultTokens, (w+i)%2 == 1)
					hung := ctx.Err() != nil
					cancel()
					want, werr := monolithicAnswer(ref, prompt, faultTokens)
					if werr != nil {
						t.Error(werr)
					}
					mu.Lock()
					row.requests++
					switch {
					case hung:
						row.hung++
					case err != nil:
						row.failed++
						if firstErrAt.IsZero() {
							firstErrAt, row.firstError = time.Now(), err.Error()
						}
					case got != want:
						row.wrong++
						t.Errorf("%s: %q answered %q, monolithic %q", ph.name, prompt, got, want)
					default:
						row.ok++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if ph.inject != nil {
			at := <-injected
			first := detected
			if !firstErrAt.IsZero() && (first.IsZero() || firstErrAt.Before(first)) {
				first = firstErrAt
			}
			if !first.IsZero() && first.After(at) {
				row.detect = first.Sub(at)
			}
		}
		// The lease bound: every hold a dead or silent reader left has
		// expired and been swept.
		time.Sleep(faultLeaseTTL + time.Second)
		for _, in := range append(append([]*instance{}, f.ps...), f.ds...) {
			if in.cmd.ProcessState != nil {
				continue // dead
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s, err := scrape(ctx, in.url)
			cancel()
			if err != nil {
				t.Errorf("%s: metrics: %v", in.name, err)
				continue
			}
			row.held += metricValue(s, "hybridxfer_pool_blocks_used")
		}
		if after != nil {
			after()
		}
		if row.hung > 0 || row.wrong > 0 || row.held > 0 || (ph.inject == nil && row.failed > 0) {
			bad = true
		}
		rows = append(rows, row)
		_ = blame
	}
	fmt.Println()
	fmt.Println("| fault | requests | succeeded (== monolithic) | wrong | failed with an error | hung | time to detect | blocks held after the lease bound |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		det := "-"
		if r.detect > 0 {
			det = r.detect.Round(time.Millisecond).String()
		}
		fmt.Printf("| %s | %d | %d | %d | %d | %d | %s | %.0f |\n", r.fault, r.requests, r.ok, r.wrong, r.failed, r.hung, det, r.held)
	}
	for _, r := range rows {
		if r.firstError != "" {
			fmt.Printf("first error under %q: %.300s\n", r.fault, r.firstError)
		}
	}
	if bad {
		t.Fatal("the campaign found hung requests, wrong answers, failures without a fault, or blocks still held")
	}
}

// unhealthy: the proxy's /health names the instance.
func (f *fleet) unhealthy(ctx context.Context, in *instance) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.proxy.url+"/health", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var h struct {
		Unhealthy []struct{ URL string } `json:"unhealthy"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&h)
	for _, u := range h.Unhealthy {
		if u.URL == in.url {
			return true
		}
	}
	return false
}

// leaseExpired: a prefill instance swept a lease no notification released.
func (f *fleet) leaseExpired(ctx context.Context, _ *instance) bool {
	for _, p := range f.ps {
		if s, err := scrape(ctx, p.url); err == nil && metricValue(s, "hybridxfer_leases_expired_total") > 0 {
			return true
		}
	}
	return false
}
