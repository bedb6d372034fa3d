package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/hybridxfer/hybridxfer/statexfer/session"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hybridxfer/hybridxfer/serve"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/hybridxfer/hybridxfer/statexfer/ucx"
	"github.com/hybridxfer/hybridxfer/statexfer/zmqchan"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

// zmqHandshake wires the engine's handshake to ZeroMQ.
func zmqServe(host string, port int, log *slog.Logger) serve.HandshakeServer {
	return func(engineID string, compat [32]byte, summary map[string]string, payload []byte) (int, func() error, error) {
		srv, err := zmqchan.Listen(zmqchan.ServerConfig{Host: host, BasePort: port, EngineID: engineID,
			CompatHash: zmqchan.Hash(compat), Summary: summary, Logger: log,
			Handler: func(zmqchan.Request) (zmqchan.Reply, error) { return zmqchan.Reply{Payload: payload}, nil }})
		if err != nil {
			return 0, nil, err
		}
		return srv.Port(), srv.Close, nil
	}
}

func zmqFetch(ctx context.Context, host string, port int, compat [32]byte, summary map[string]string) (session.Handshake, error) {
	rep, err := zmqchan.Fetch(ctx, zmqchan.Endpoint(host, port, 0), zmqchan.Request{Rank: zmqchan.RankAll, EngineID: "decode", CompatHash: zmqchan.Hash(compat)},
		zmqchan.WithTimeout(5*time.Second), zmqchan.WithSummary(summary))
	if err != nil {
		return session.Handshake{}, err
	}
	off, _ := rep.ClockOffset()
	return session.Handshake{Payload: rep.Payload, ClockOffset: off}, nil
}

func serveCmd() *cobra.Command {
	var (
		mf                        modelFlags
		inst                      instanceFlags
		role, model, host, listen string
		port, hsPort, numBlocks   int
		seed                      uint64
		leaseTTL, xferTimeout     time.Duration
		heartbeat                 time.Duration
		maxModelLen               int
		stagingBytes              int64
		dropNotify                float64
		handoff, policy, mode     string
		errMode                   string
	)
	c := &cobra.Command{
		Use:   "serve --role prefill|decode|both --model NAME|FILE --tp N",
		Short: "Run one instance: its TP ranks, the reference model, state transfer, and an OpenAI-compatible HTTP API",
		Long: `serve runs one instance of the given role. Every TP rank has its own registered memory
and UCX endpoint; the scheduler allocates through the hybrid allocator; the model is the
reference miniature of --model (same layer kinds and head counts, tiny dimensions, weights
from --seed). HTTP: /v1/completions, /v1/chat/completions (streaming or not), /v1/models,
/health, /metrics. A prefill instance answers requests carrying
kv_transfer_params {"do_remote_decode": true} with the parameters a decode instance needs
and serves its handshake (ZeroMQ) on --handshake-port; a decode instance loads the state
those parameters describe and decodes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			m, err := mf.load(model)
			if err != nil {
				return err
			}
			ic, err := inst.config()
			if err != nil {
				return err
			}
			md, err := plan.ParseMode(mode)
			if err != nil {
				return err
			}
			uc, err := ucxConfig("", errMode)
			if err != nil {
				return err
			}
			reg := prometheus.NewRegistry()
			id := fmt.Sprintf("%s-%s-%d", role, host, port)
			cfg := serve.Config{Role: serve.Role(role), EngineID: id, Model: m, Seed: seed, Instance: ic, NumBlocks: numBlocks,
				Host: host, LeaseTTL: leaseTTL, Handoff: serve.Handoff(handoff), TransferTimeout: xferTimeout, FailurePolicy: policy, Mode: md,
				HeartbeatInterval: heartbeat, MaxModelLen: maxModelLen, StagingBytes: stagingBytes,
				Transports: func(r int, h transport.Handlers) (transport.Transport, error) {
					c := uc
					c.Name = fmt.Sprintf("%s-rank%d", role, r)
					if dropNotify <= 0 {
						return ucx.New(c, h)
					}
					// Fault campaigns: lose this share of the notifications the rank sends.
					f := transport.NewFaultPlan(uint64(r) + 1).Add(transport.Rule{Kind: transport.OpNotify, Rate: dropNotify, Fault: transport.Fault{Kind: transport.FaultDrop}})
					tr, err := ucx.New(c, f.Handlers(h))
					if err != nil {
						return nil, err
					}
					return transport.WithFaults(tr, f), nil
				},
				Serve: zmqServe(host, hsPort, log), Fetch: zmqFetch,
				Metrics: serve.NewMetrics(reg, id, serve.Role(role)), Log: log}
			eng, err := serve.New(cfg)
			if err != nil {
				return err
			}
			defer eng.Close()
			addr := net.JoinHostPort(listen, fmt.Sprint(port))
			return runHTTP(cmd.Context(), addr, serve.NewHandler(eng, reg, log), log,
				fmt.Sprintf("%s instance of %s (tp %d) on http://%s, handshake port %d", role, m.Name, ic.TP, addr, eng.HandshakePort()))
		},
	}
	mf.register(c)
	inst.register(c, "", 1)
	c.Flags().StringVar(&role, "role", "both", "prefill, decode or both")
	c.Flags().StringVar(&model, "model", "qwen3.5-27b", "preset name, Hugging Face config.json or hybridxfer model JSON")
	c.Flags().StringVar(&host, "host", "127.0.0.1", "address peers use to reach this instance (kv_transfer_params remote_host)")
	c.Flags().StringVar(&listen, "listen", "127.0.0.1", "HTTP listen address")
	c.Flags().IntVar(&port, "port", 8100, "HTTP port")
	c.Flags().IntVar(&hsPort, "handshake-port", 0, "prefill: ZeroMQ handshake port (0: any free port)")
	c.Flags().IntVar(&numBlocks, "num-blocks", 1024, "blocks per pool")
	c.Flags().Uint64Var(&seed, "seed", 1, "reference model weights seed (must match across instances)")
	c.Flags().DurationVar(&leaseTTL, "lease-ttl", 30*time.Second, "prefill: how long a finished request's state waits for its readers")
	c.Flags().DurationVar(&xferTimeout, "transfer-timeout", 10*time.Second, "decode: a load taking longer fails")
	c.Flags().DurationVar(&heartbeat, "heartbeat-interval", time.Second, "decode: heartbeat interval for requests being loaded (extends the prefill lease; a prefill silent for 5 intervals is declared failed)")
	c.Flags().IntVar(&maxModelLen, "max-model-len", 8192, "prompt + max_tokens above this are refused with 400")
	c.Flags().Int64Var(&stagingBytes, "staging-bytes", 64<<20, "per rank staging pool (prefill: gathers; decode: scratch), split into per-request ranges")
	c.Flags().Float64Var(&dropNotify, "fault-drop-notify", 0, "testing: lose this share (0..1) of the control messages every rank sends")
	_ = c.Flags().MarkHidden("fault-drop-notify")
	c.Flags().StringVar(&handoff, "handoff", string(serve.DecodeComputesLast), "prefill: decode-computes-last or prefill-samples-first")
	c.Flags().StringVar(&policy, "kv-load-failure-policy", serve.PolicyFail, "decode: fail (error to the client) or recompute")
	c.Flags().StringVar(&mode, "mode", "auto", "decode: read shaping, direct, staged or auto")
	c.Flags().StringVar(&errMode, "ucx-error-mode", "none", "UCX endpoint error handling: none or peer")
	return c
}

// runHTTP serves h until the context ends or SIGINT/SIGTERM, then shuts down.
func runHTTP(ctx context.Context, addr string, h http.Handler, log *slog.Logger, banner string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info(banner)
	fmt.Fprintln(os.Stdout, "READY", "http://"+ln.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func proxyCmd() *cobra.Command {
	var (
		prefill, decode, listen string
		port                    int
		healthInterval          time.Duration
	)
	c := &cobra.Command{
		Use:   "proxy --prefill URL[,URL...] --decode URL[,URL...] --port P",
		Short: "OpenAI-compatible proxy: prefill on a P instance, decode on a D instance, stream D's answer",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			p, err := serve.NewProxyWithOptions(splitList(prefill), splitList(decode), serve.ProxyOptions{
				Client: &http.Client{Timeout: 5 * time.Minute}, Log: log, HealthInterval: healthInterval,
			})
			if err != nil {
				return err
			}
			defer p.Close()
			addr := net.JoinHostPort(listen, fmt.Sprint(port))
			return runHTTP(cmd.Context(), addr, p, log, fmt.Sprintf("proxy on http://%s (prefill %s, decode %s)", addr, prefill, decode))
		},
	}
	c.Flags().StringVar(&prefill, "prefill", "", "prefill instance URLs, comma-separated")
	c.Flags().StringVar(&decode, "decode", "", "decode instance URLs, comma-separated")
	c.Flags().StringVar(&listen, "listen", "127.0.0.1", "listen address")
	c.Flags().IntVar(&port, "port", 8000, "port")
	c.Flags().DurationVar(&healthInterval, "health-interval", serve.DefaultHealthInterval,
		"how often every instance's /health is probed; a failing instance is excluded until it answers 200")
	return c
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
