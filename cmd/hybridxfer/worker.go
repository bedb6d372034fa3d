package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hybridxfer/hybridxfer/groups"
	"github.com/hybridxfer/hybridxfer/statexfer"
	"github.com/hybridxfer/hybridxfer/statexfer/session"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/hybridxfer/hybridxfer/statexfer/ucx"
	"github.com/hybridxfer/hybridxfer/statexfer/verify"
	"github.com/hybridxfer/hybridxfer/statexfer/zmqchan"
	"github.com/spf13/cobra"
)

func workerCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "worker",
		Short:  "Internal: one prefill or decode process of a multi-process run (reads its spec on stdin)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := bufio.NewReader(os.Stdin)
			line, err := in.ReadString('\n')
			if err != nil {
				return fmt.Errorf("worker: read spec: %w", err)
			}
			var spec workerSpec
			if err := json.Unmarshal([]byte(line), &spec); err != nil {
				return fmt.Errorf("worker: bad spec: %w", err)
			}
			spec.UCX.setWorkerLogger()
			out := &lineWriter{w: os.Stdout}
			var runErr error
			switch spec.Side {
			case "prefill":
				runErr = runPrefillWorker(spec, in, out)
			case "decode":
				runErr = runDecodeWorker(spec, in, out)
			default:
				runErr = fmt.Errorf("worker: side %q", spec.Side)
			}
			if runErr != nil {
				out.line("ERROR", runErr.Error())
			}
			return runErr
		},
	}
}

type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) line(verb, payload string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%s %s\n", verb, strings.ReplaceAll(payload, "\n", " "))
}

func compat(m *groups.Model) (zmqchan.Hash, map[string]string) {
	return zmqchan.Hash(groups.CompatHash(m, statexfer.ProtocolVersion)), groups.CompatFields(m, statexfer.ProtocolVersion)
}

// loadJob rebuilds the job a worker's spec describes, with the staging
// sizes its plans need.
func loadJob(spec workerSpec) (j *verify.Job, pool, scratch []int64, err error) {
	cfg, err := spec.Job.config()
	if err != nil {
		return nil, nil, nil, err
	}
	if j, err = verify.NewJob(cfg); err != nil {
		return nil, nil, nil, err
	}
	pool, scratch, err = j.Staging()
	return j, pool, scratch, err
}

// ucxTransports builds the hosted ranks' UCX transports for a session.
func ucxTransports(side string, ux ucxFlags) session.TransportFactory {
	return func(r int, h transport.Handlers) (transport.Transport, error) {
		uc, err := ux.config(fmt.Sprintf("%s-%d", side, r))
		if err != nil {
			return nil, err
		}
		tr, err := ucx.New(uc, h)
		if err != nil {
			return nil, fmt.Errorf("%s rank %d: %w", side, r, err)
		}
		return tr, nil
	}
}

// ucxPaths counts the read batches of the hosted ranks per UCX path.
func ucxPaths(d *session.Decode, ranks []int) map[string]int {
	var ts []*ucx.Transport
	for _, r := range ranks {
		if t, ok := d.Transport(r).(*ucx.Transport); ok {
			ts = append(ts, t)
		}
	}
	return ucxPathCounts(ts)
}

// runPrefillWorker hosts P ranks: registers and fills their memory,
// publishes metadata, serves the handshake (the host of rank 0), and waits
// until every request was released on every hosted rank.
func runPrefillWorker(spec workerSpec, in *bufio.Reader, out *lineWriter) error {
	j, pool, _, err := loadJob(spec)
	if err != nil {
		return err
	}
	cfg := j.Cfg
	ctx := context.Background()
	trs := ucxTransports("prefill", spec.UCX)
	if spec.Bench {
		trs = echoPrefill(trs)
	}
	pre, err := j.StartP(spec.Ranks, spec.BootID, trs, pool)
	if err != nil {
		return err
	}
	defer pre.Session.Close()
	enc, err := statexfer.EncodeRankMetas(pre.Session.Metas())
	if err != nil {
		return err
	}
	out.line("META", b64(enc))
	hostsRank0 := len(spec.Ranks) > 0 && spec.Ranks[0] == 0
	if hostsRank0 {
		line, err := in.ReadString('\n')
		if err != nil {
			return fmt.Errorf("read METAS: %w", err)
		}
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "METAS ")
		if !ok {
			return fmt.Errorf("expected METAS, got %q", line)
		}
		var all []statexfer.RankMeta
		for _, part := range strings.Split(rest, ",") {
			b, err := unb64(part)
			if err != nil {
				return err
			}
			ms, err := statexfer.DecodeRankMetas(b)
			if err != nil {
				return err
			}
			all = append(all, ms...)
		}
		payload, err := statexfer.EncodeRankMetas(all)
		if err != nil {
			return err
		}
		hash, summary := compat(cfg.Model)
		srv, err := zmqchan.Listen(zmqchan.ServerConfig{Host: "127.0.0.1", BasePort: spec.BasePort, EngineID: verify.PrefillEngineID,
			CompatHash: hash, Summary: summary,
			Handler: func(zmqchan.Request) (zmqchan.Reply, error) { return zmqchan.Reply{Payload: payload}, nil }})
		if err != nil {
			return err
		}
		defer srv.Close()
		out.line("LISTEN", srv.Addr())
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := pre.Wait(wctx); err != nil {
		return err
	}
	out.line("DONE", fmt.Sprintf(`{"released":%d,"ranks":%d}`, pre.Released()*len(spec.Ranks), len(spec.Ranks)))
	io.Copy(io.Discard, in) // stay up (serving reads) until the coordinator closes stdin
	return nil
}

// sideChannelFetcher does the handshake with P's side channel at addr.
func sideChannelFetcher(addr string, m *groups.Model) session.Fetcher {
	return func(ctx context.Context, _ string, _ int) (session.Handshake, error) {
		hash, summary := compat(m)
		rep, err := zmqchan.Fetch(ctx, addr, zmqchan.Request{Rank: zmqchan.RankAll, EngineID: "decode", CompatHash: hash},
			zmqchan.WithTimeout(10*time.Second), zmqchan.WithSummary(summary))
		if err != nil {
			return session.Handshake{}, err
		}
		off, unc := rep.ClockOffset()
		slog.Debug("handshake", "addr", addr, "engine", rep.EngineID, "hash", hex.EncodeToString(hash[:4]), "clock_offset", off, "uncertainty", unc)
		return session.Handshake{Payload: rep.Payload, ClockOffset: off}, nil
	}
}

// runDecodeWorker hosts D ranks: handshake, reads, checks (or a benchmark).
func runDecodeWorker(spec workerSpec, in *bufio.Reader, out *lineWriter) error {
	j, _, scratch, err := loadJob(spec)
	if err != nil {
		return err
	}
	ctx := context.Background()
	trs := ucxTransports("decode", spec.UCX)
	echoes := make(chan string, 64)
	if spec.Bench {
		trs = echoDecode(trs, echoes)
	}
	dec, err := j.StartD(ctx, spec.Ranks, trs, sideChannelFetcher(spec.SideChannel, j.Cfg.Model), scratch)
	if err != nil {
		return err
	}
	defer dec.Session.Close()
	if spec.Bench {
		res, err := benchDecode(ctx, j, spec, dec, echoes)
		if err != nil {
			return err
		}
		b, _ := json.Marshal(res)
		out.line("RESULT", string(b))
		io.Copy(io.Discard, in)
		return nil
	}
	res, err := dec.Run(ctx, j)
	if err != nil {
		return err
	}
	res.Paths = ucxPaths(dec.Session, spec.Ranks)
	b, _ := json.Marshal(res)
	out.line("RESULT", string(b))
	io.Copy(io.Discard, in)
	return nil
}
