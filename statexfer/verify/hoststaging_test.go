package verify

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/kernels"
	"github.com/hybridxfer/hybridxfer/kernels/kerneltest"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/session"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
)

func inprocFactory(_ int, h transport.Handlers) (transport.Transport, error) {
	return transport.NewInproc(h), nil
}

// startDecode starts j's decode side (with j.Cfg.Memory as it is now)
// connected to pre over inproc through the static fetcher.
func startDecode(t *testing.T, j *Job, pre *Prefill, scratch []int64) *Decode {
	t.Helper()
	fetch, err := StaticFetcher(pre.Session.Metas())
	if err != nil {
		t.Fatal(err)
	}
	dec, err := j.StartD(context.Background(), nil, inprocFactory, fetch, scratch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dec.Session.Close() })
	return dec
}

// loadFresh registers a new request id on P with request 0's blocks and
// loads it on D in mode (a refused load gives up its request, so each
// probe needs its own).
func loadFresh(t *testing.T, j *Job, pre *Prefill, dec *Decode, id string, grant uint64, mode plan.Mode) error {
	t.Helper()
	if err := pre.Session.Register(id, grant, j.reqs[0].pIDs); err != nil {
		t.Fatal(err)
	}
	_, err := dec.Session.Load(context.Background(), session.LoadRequest{Peer: dec.Peer, ReqID: id, Grant: grant, Mode: mode, Req: j.Request(0)})
	return err
}

// Host staging on either side alone: the decode session learns it from the
// handshake (P's cache regions published without keys, or its own cache
// unregistered), so Auto stages every plan and the state arrives
// byte-exact, and Direct is refused with the reason instead of reading
// memory that is not registered.
func TestHostStagingOnEitherSide(t *testing.T) {
	m, err := groups.Preset("qwen3.5-0.8b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name         string
		pHost, dHost bool
		device       bool // caches in an engine without host views (kerneltest.Opaque), as on a GPU
		want         string
	}{
		{"prefill", true, false, false, "prefill rank 0 stages through host memory"},
		{"decode", false, true, false, "decode rank 0 stages through host memory"},
		{"both", true, true, false, "decode rank 0 stages through host memory"},
		{"device-caches", true, true, true, "decode rank 0 stages through host memory (its device:0 cache"},
	} {
		t.Run(c.name, func(t *testing.T) {
			j, err := NewJob(Config{Model: m, P: groups.InstanceConfig{TP: 2}, D: groups.InstanceConfig{TP: 4, ConvLayout: groups.SD},
				PromptTokens: 300, Requests: 4, Seed: 9, Mode: plan.Auto, Memory: statexfer.MemoryConfig{HostStaging: true}})
			if err != nil {
				t.Fatal(err)
			}
			pool, scratch, err := j.Staging() // sized for staged plans (the job's planner knows)
			if err != nil {
				t.Fatal(err)
			}
			// The sessions' planners know nothing of the job's: what they
			// learn comes from the memory of each side.
			pEng, dEng := kerneltest.NewRecorder(kernels.NewCPU()), kerneltest.NewRecorder(kernels.NewCPU())
			kind := transport.HostMemory
			if c.device {
				pEng, dEng = kerneltest.NewRecorder(kerneltest.NewOpaque()), kerneltest.NewRecorder(kerneltest.NewOpaque())
				kind = transport.DeviceMemory(0)
			}
			j.Cfg.Memory = statexfer.MemoryConfig{HostStaging: c.pHost, Engine: pEng, Kind: kind}
			pre, err := j.StartP(nil, "", inprocFactory, pool)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { pre.Session.Close() }) // after the decode side (cleanups run last first)
			for r := 0; r < 2; r++ {
				l := pre.Session.Local(r)
				if _, registered := l.Regions[plan.Region{Pool: 0, Slot: 0}]; registered == c.pHost {
					t.Fatalf("prefill rank %d: cache registered %v with host staging %v", r, registered, c.pHost)
				}
				if hostView := l.Mem.Region(plan.Region{Pool: 0, Slot: 0}) != nil; hostView == c.device {
					t.Fatalf("prefill rank %d: cache host view %v with device caches %v", r, hostView, c.device)
				}
			}
			j.Cfg.Memory = statexfer.MemoryConfig{HostStaging: c.dHost, Engine: dEng, Kind: kind}
			dec := startDecode(t, j, pre, scratch)
			res, err := dec.Run(context.Background(), j)
			if err != nil {
				t.Fatal(err)
			}
			if !res.OK() || res.DirectPlans != 0 || res.StagedPlans != 4*4 || res.BytesMoved == 0 {
				t.Fatalf("%d mismatches, %d untouched violations, %d direct / %d staged plans, %d bytes: %s",
					res.ByteMismatches, res.UntouchedViolations, res.DirectPlans, res.StagedPlans, res.BytesMoved, res.FirstProblem)
			}
			// P's gathers and D's scatters and conv transposes (P is DS, D
			// SD) ran on the engines given, and were waited for.
			if pEng.Copies.Load() == 0 || pEng.Syncs.Load() == 0 || dEng.Copies.Load() == 0 || dEng.Transposes.Load() == 0 || dEng.Syncs.Load() == 0 {
				t.Fatalf("engines: prefill %d copies %d syncs, decode %d copies %d transposes %d syncs",
					pEng.Copies.Load(), pEng.Syncs.Load(), dEng.Copies.Load(), dEng.Transposes.Load(), dEng.Syncs.Load())
			}
			// A request in direct mode is refused with the reason.
			err = loadFresh(t, j, pre, dec, "direct-probe", 77, plan.Direct)
			if !errors.Is(err, plan.ErrBadRequest) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("direct load: %v, want ErrBadRequest naming %q", err, c.want)
			}
		})
	}
}

// The in-process executor runs every kernel on the engine of the config:
// the same bytes as the CPU engine's host path, with the kernels counted.
func TestRunThroughEngine(t *testing.T) {
	m := groups.KindSampleModel()
	for _, mode := range []plan.Mode{plan.Direct, plan.Staged} {
		rec := kerneltest.NewRecorder(kernels.NewCPU())
		p := groups.InstanceConfig{TP: 2, BlockSize: 16, ConvLayout: groups.SD}
		d := groups.InstanceConfig{TP: 4, BlockSize: 32, KernelBlockSize: 16, AttnLayout: groups.NHD}
		res, err := Run(Config{Model: m, P: p, D: d, PromptTokens: 77, Requests: 3, Seed: 3, Mode: mode, Memory: statexfer.MemoryConfig{Engine: rec}})
		if err != nil {
			t.Fatal(err)
		}
		if !res.OK() || res.BytesMoved == 0 {
			t.Fatalf("%s: %d mismatches, %d untouched: %s", mode, res.ByteMismatches, res.UntouchedViolations, res.FirstProblem)
		}
		if rec.Copies.Load() == 0 || rec.Transposes.Load() == 0 || rec.Maps.Load() == 0 {
			t.Fatalf("%s: %d copies, %d transposes, %d mapped regions on the engine", mode, rec.Copies.Load(), rec.Transposes.Load(), rec.Maps.Load())
		}
	}
}

// Auto does not stage a plan P's staging pool cannot hold: with the cost
// model preferring staged reads (inproc reads are priced at the default
// 500 ns, gpt-oss's 2 KiB reads stage) and P's pool smaller than one
// gather, every request reads directly and arrives byte-exact, where it
// failed with "could not stage" before; explicit Staged still fails with
// the reason.
func TestAutoDoesNotStageWhatPCannotHold(t *testing.T) {
	m, err := groups.Preset("gpt-oss-120b", groups.PresetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	j, err := NewJob(Config{Model: m, P: groups.InstanceConfig{TP: 4}, D: groups.InstanceConfig{TP: 8}, PromptTokens: 600, Requests: 3, Seed: 4, Mode: plan.Auto, Exact: true})
	if err != nil {
		t.Fatal(err)
	}
	p0, err := j.PlanRequest(0, 0)
	if err != nil || p0.Mode != plan.Staged {
		t.Fatalf("the job's own planner: %v, want a staged plan (the case this test needs)", err)
	}
	_, scratch, err := j.Staging()
	if err != nil {
		t.Fatal(err)
	}
	small := []int64{4096, 4096, 4096, 4096} // far below one gather
	pre, err := j.StartP(nil, "", inprocFactory, small)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pre.Session.Close() }) // after the decode side (cleanups run last first)
	dec := startDecode(t, j, pre, scratch)
	res, err := dec.Run(context.Background(), j)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK() || res.StagedPlans != 0 || res.DirectPlans != 3*8 {
		t.Fatalf("%d mismatches, %d direct / %d staged plans: %s", res.ByteMismatches, res.DirectPlans, res.StagedPlans, res.FirstProblem)
	}
	err = loadFresh(t, j, pre, dec, "staged-probe", 78, plan.Staged)
	if err == nil || !strings.Contains(err.Error(), "staging") {
		t.Fatalf("explicit staged load past P's pool: %v, want a staging error", err)
	}
}
