package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"
	"github.com/hybridxfer/hybridxfer/discovery"

	"github.com/hybridxfer/hybridxfer/openai"
	"github.com/hybridxfer/hybridxfer/proxy"

	"github.com/hybridxfer/hybridxfer/engine"
	"github.com/hybridxfer/hybridxfer/hma"
	"github.com/hybridxfer/hybridxfer/statexfer/grant"
	"github.com/hybridxfer/hybridxfer/statexfer/plan"
	"github.com/hybridxfer/hybridxfer/statexfer/session"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/hybridxfer/hybridxfer/statexfer/ucx"
	"github.com/hybridxfer/hybridxfer/statexfer/zmqchan"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

// sideChannel is the handshake's authentication: P's CURVE server key and
// allow-list, or D's client key and P's public key (nil: plaintext).
type sideChannel struct {
	server *zmqchan.CurveServer
	client *zmqchan.CurveClient
}

// zmqServe wires the engine's handshake to ZeroMQ on port+dp (any free
// port when port is 0): ranks bounds the rank a request may name.
func zmqServe(host string, port, dp, ranks int, sc sideChannel, log *slog.Logger) engine.HandshakeServer {
	return func(engineID string, compat [32]byte, summary map[string]string, payload []byte) (int, func() error, error) {
		srv, err := zmqchan.Listen(zmqchan.ServerConfig{Host: host, BasePort: port, DPIndex: dp, EngineID: engineID,
			CompatHash: zmqchan.Hash(compat), Summary: summary, Logger: log, Ranks: ranks, Curve: sc.server,
			Handler: func(zmqchan.Request) (zmqchan.Reply, error) { return zmqchan.Reply{Payload: payload}, nil }})
		if err != nil {
			return 0, nil, err
		}
		return srv.Port(), srv.Close, nil
	}
}

// zmqFetch is D's side of the handshake.
func zmqFetch(sc sideChannel) engine.HandshakeClient {
	return func(ctx context.Context, host string, port int, compat [32]byte, summary map[string]string) (session.Handshake, error) {
		opts := []zmqchan.FetchOption{zmqchan.WithTimeout(5 * time.Second), zmqchan.WithSummary(summary)}
		if sc.client != nil {
			opts = append(opts, zmqchan.WithCurve(*sc.client))
		}
		rep, err := zmqchan.Fetch(ctx, zmqchan.Endpoint(host, port, 0), zmqchan.Request{Rank: zmqchan.RankAll, EngineID: "decode", CompatHash: zmqchan.Hash(compat)}, opts...)
		if err != nil {
			return session.Handshake{}, err
		}
		off, _ := rep.ClockOffset()
		return session.Handshake{Payload: rep.Payload, ClockOffset: off}, nil
	}
}

// loadSideChannel reads the CURVE flags of role: a prefill needs its
// secret key and an allow-list of decode public keys; a decode its own
// secret key and the prefill instances' public key. Neither: plaintext,
// with a warning.
//
// A bidirectional instance (--bidirectional) both serves a handshake and
// fetches its peers': it needs all three (its secret key, the peers'
// public keys it admits, and the peers' server public key).
func loadSideChannel(role, keyFile, allowFile, serverPub string, bidirectional bool, log *slog.Logger) (sideChannel, error) {
	if keyFile == "" && allowFile == "" && serverPub == "" {
		if role != string(backend.RoleBoth) {
			log.Warn("no --handshake-key: the ZeroMQ handshake is not authenticated; anyone who reaches it gets this instance's transfer metadata (see docs/security.md)")
		}
		return sideChannel{}, nil
	}
	if bidirectional {
		if keyFile == "" || allowFile == "" || serverPub == "" {
			return sideChannel{}, fmt.Errorf("%w --handshake-key, --handshake-allow and --handshake-server-pub: a bidirectional instance serves a handshake and fetches its peers', so it needs all three", errFlag)
		}
		srv, err := zmqchan.LoadCurveServer(keyFile, allowFile)
		if err != nil {
			return sideChannel{}, err
		}
		k, err := zmqchan.LoadCurveKey(keyFile)
		if err != nil {
			return sideChannel{}, err
		}
		pub, err := zmqchan.LoadCurvePublic(serverPub)
		if err != nil {
			return sideChannel{}, err
		}
		c := k.Client(pub)
		return sideChannel{server: srv, client: &c}, nil
	}
	switch backend.Role(role) {
	case backend.RolePrefill:
		if keyFile == "" || allowFile == "" {
			return sideChannel{}, fmt.Errorf("%w --handshake-key and --handshake-allow: a prefill needs both (its CURVE secret key and the decode instances' public keys)", errFlag)
		}
		srv, err := zmqchan.LoadCurveServer(keyFile, allowFile)
		return sideChannel{server: srv}, err
	case backend.RoleDecode:
		if keyFile == "" || serverPub == "" {
			return sideChannel{}, fmt.Errorf("%w --handshake-key and --handshake-server-pub: a decode needs both (its CURVE secret key and the prefill instances' public key)", errFlag)
		}
		k, err := zmqchan.LoadCurveKey(keyFile)
		if err != nil {
			return sideChannel{}, err
		}
		pub, err := zmqchan.LoadCurvePublic(serverPub)
		if err != nil {
			return sideChannel{}, err
		}
		c := k.Client(pub)
		return sideChannel{client: &c}, nil
	}
	return sideChannel{}, fmt.Errorf("%w --handshake-key: a %s instance has no handshake", errFlag, role)
}

// serveOptions are serve's flags.
type serveOptions struct {
	mf                        modelFlags
	inst                      instanceFlags
	logs                      logFlags
	role, model, host, listen string
	port, hsPort, numBlocks   int
	dpSize, dpRank            int
	disc, discPrefix          string
	advertise                 string
	discTTL                   time.Duration
	seed                      uint64
	leaseTTL, xferTimeout     time.Duration
	drainTimeout              time.Duration
	heartbeat                 time.Duration
	maxModelLen               int
	stagingBytes              int64
	mem                       memoryFlags
	dropNotify                float64
	handoff, policy, mode     string
	ux                        ucxFlags
	clusterKeyFile            string
	hsKey, hsAllow, hsPub     string
	apiKeyFile                string
	cacheMode                 string
	bidirectional             bool
	conversationTTL           time.Duration
}

// dpRanks are the data-parallel ranks this process runs.
func (o *serveOptions) dpRanks() []int {
	if o.dpRank >= 0 {
		return []int{o.dpRank}
	}
	out := make([]int, o.dpSize)
	for r := range out {
		out[r] = r
	}
	return out
}

// validate checks every flag before anything is allocated or bound.
func (o *serveOptions) validate() error {
	var fc flagChecks
	o.logs.check(&fc)
	o.ux.check(&fc)
	switch backend.Role(o.role) {
	case backend.RolePrefill, backend.RoleDecode, backend.RoleBoth:
	default:
		fc.fail("role", "%q (want prefill, decode or both)", o.role)
	}
	if o.disc != "" {
		if _, err := discovery.Endpoints(o.disc); err != nil {
			fc.fail("discovery", "%v", err)
		}
		fc.duration("discovery-ttl", o.discTTL, 2*time.Second, time.Hour)
	}
	fc.intIn("data-parallel-size", int64(o.dpSize), 1, 64)
	if o.dpRank < -1 || o.dpRank >= o.dpSize {
		fc.fail("data-parallel-rank", "%d (want -1 for every rank, or 0..%d)", o.dpRank, o.dpSize-1)
	}
	fc.port("port", o.port, false)
	fc.port("handshake-port", o.hsPort, true)
	if o.dpSize > 1 {
		// The last rank's ports must exist too.
		fc.port("port", o.port+o.dpSize-1, false)
		if o.hsPort != 0 {
			fc.port("handshake-port", o.hsPort+o.dpSize-1, true)
		}
	}
	fc.intIn("num-blocks", int64(o.numBlocks), 1, 1<<26)
	fc.duration("lease-ttl", o.leaseTTL, 100*time.Millisecond, 24*time.Hour)
	fc.duration("conversation-ttl", o.conversationTTL, 100*time.Millisecond, 24*time.Hour)
	if o.bidirectional && backend.Role(o.role) == backend.RoleBoth {
		fc.fail("bidirectional", "is for prefill and decode instances (--role prefill or decode)")
	}
	fc.duration("transfer-timeout", o.xferTimeout, time.Millisecond, time.Hour)
	fc.duration("drain-timeout", o.drainTimeout, time.Millisecond, 24*time.Hour)
	fc.duration("heartbeat-interval", o.heartbeat, 10*time.Millisecond, time.Hour)
	if o.heartbeat >= o.leaseTTL && o.leaseTTL > 0 {
		fc.fail("heartbeat-interval", "%v must be shorter than --lease-ttl %v (each heartbeat extends the lease)", o.heartbeat, o.leaseTTL)
	}
	fc.intIn("max-model-len", int64(o.maxModelLen), 2, 1<<22)
	fc.intIn("staging-bytes", o.stagingBytes, 0, 1<<40)
	fc.share("fault-drop-notify", o.dropNotify)
	switch backend.Handoff(o.handoff) {
	case backend.DecodeComputesLast, backend.PrefillSamplesFirst:
	default:
		fc.fail("handoff", "%q (want %s or %s)", o.handoff, backend.DecodeComputesLast, backend.PrefillSamplesFirst)
	}
	if o.policy != backend.PolicyFail && o.policy != backend.PolicyRecompute {
		fc.fail("kv-load-failure-policy", "%q (want fail or recompute)", o.policy)
	}
	if _, err := plan.ParseMode(o.mode); err != nil {
		fc.fail("mode", "%q (want direct, staged or auto)", o.mode)
	}
	if o.host == "" || o.host == "0.0.0.0" || o.host == "::" {
		fc.fail("host", "%q: give the address peers reach this instance at (UCX and ZeroMQ bind its interface only)", o.host)
	}
	if _, err := o.inst.config(); err != nil {
		fc.errs = append(fc.errs, err)
	}
	parseCacheMode(&fc, "mamba-cache-mode", o.cacheMode)
	return fc.err()
}

func serveCmd() *cobra.Command {
	var o serveOptions
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
those parameters describe and decodes.

Security (docs/security.md): --cluster-key-file (the same file on every instance and
the proxy) signs the grants in kv_transfer_params and derives the token the proxy
presents on the internal endpoints; without it any client that reaches an instance
can mint params.`,
		Args:    cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error { return o.validate() },
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := o.logs.logger(os.Stderr)
			if err != nil {
				return err
			}
			m, err := o.mf.load(o.model)
			if err != nil {
				return err
			}
			ic, err := o.inst.config()
			if err != nil {
				return err
			}
			md, err := plan.ParseMode(o.mode)
			if err != nil {
				return err
			}
			uc, err := o.ux.config("")
			if err != nil {
				return err
			}
			if err := uc.RestrictToHost(o.host); err != nil {
				return fmt.Errorf("--host %s: %w", o.host, err)
			}
			key, err := loadClusterKey(o.clusterKeyFile, log)
			if err != nil {
				return err
			}
			sc, err := loadSideChannel(o.role, o.hsKey, o.hsAllow, o.hsPub, o.bidirectional, log)
			if err != nil {
				return err
			}
			var hopts openai.HandlerOptions
			if o.apiKeyFile != "" {
				if hopts.APIKeys, err = openai.LoadAPIKeys(o.apiKeyFile); err != nil {
					return err
				}
			}
			if key != nil {
				hopts.InternalToken = key.InternalToken()
			}
			cacheMode, err := hma.ParseRecurrentMode(o.cacheMode)
			if err != nil {
				return err
			}
			memCfg, err := o.mem.config()
			if err != nil {
				return err
			}
			if memCfg.Engine != nil {
				defer memCfg.Engine.Close()
			}
			// One engine per data-parallel rank this process runs, each with
			// its own HTTP port (port+r), handshake port (handshake-port+r),
			// metrics and engine id.
			var units []httpUnit
			for _, dp := range o.dpRanks() {
				reg := prometheus.NewRegistry()
				port := o.port + dp
				id := fmt.Sprintf("%s-%s-%d", o.role, o.host, port)
				if o.dpSize > 1 {
					id = fmt.Sprintf("%s-dp%d", id, dp)
				}
				elog := log
				if o.dpSize > 1 {
					elog = log.With("dp_rank", dp)
				}
				cfg := engine.Config{Role: backend.Role(o.role), EngineID: id, DPRank: dp, Model: m, Seed: o.seed, Instance: ic, NumBlocks: o.numBlocks, MambaCacheMode: cacheMode,
					Host: o.host, LeaseTTL: o.leaseTTL, Handoff: backend.Handoff(o.handoff), TransferTimeout: o.xferTimeout, FailurePolicy: o.policy, Mode: md,
					HeartbeatInterval: o.heartbeat, MaxModelLen: o.maxModelLen, StagingBytes: o.stagingBytes, Memory: memCfg, ClusterKey: key,
					Bidirectional: o.bidirectional, ConversationTTL: o.conversationTTL,
					Transports: func(r int, h transport.Handlers) (transport.Transport, error) {
						c := uc
						c.Name = fmt.Sprintf("%s-rank%d", o.role, r)
						if o.dpSize > 1 {
							c.Name = fmt.Sprintf("%s-dp%d-rank%d", o.role, dp, r)
						}
						if o.dropNotify <= 0 {
							return ucx.New(c, h)
						}
						// Fault campaigns: lose this share of the notifications the rank sends.
						f := transport.NewFaultPlan(uint64(r) + 1).Add(transport.Rule{Kind: transport.OpNotify, Rate: o.dropNotify, Fault: transport.Fault{Kind: transport.FaultDrop}})
						tr, err := ucx.New(c, f.Handlers(h))
						if err != nil {
							return nil, err
						}
						return transport.WithFaults(tr, f), nil
					},
					Serve: zmqServe(o.host, o.hsPort, dp, ic.TP, sc, elog), Fetch: zmqFetch(sc),
					Metrics: engine.NewMetrics(reg, id, backend.Role(o.role)), Log: elog}
				eng, err := engine.New(cfg)
				if err != nil {
					return err
				}
				defer eng.Close()
				reg.MustRegister(engine.NewCollector(eng, id, backend.Role(o.role)))
				addr := net.JoinHostPort(o.listen, fmt.Sprint(port))
				banner := fmt.Sprintf("%s instance of %s (tp %d) on http://%s, handshake port %d", o.role, m.Name, ic.TP, addr, eng.HandshakePort())
				if o.dpSize > 1 {
					banner = fmt.Sprintf("%s instance of %s (tp %d, dp rank %d of %d) on http://%s, handshake port %d", o.role, m.Name, ic.TP, dp, o.dpSize, addr, eng.HandshakePort())
				}
				unit := httpUnit{addr: addr, h: openai.NewHandlerWithOptions(eng, reg, elog, hopts), banner: banner, d: eng}
				if o.disc != "" {
					adv := o.advertise
					if adv == "" {
						adv = "http://" + net.JoinHostPort(o.host, fmt.Sprint(o.port))
					}
					u, err := advertiseURL(adv, dp)
					if err != nil {
						return err
					}
					in := discovery.Instance{Role: o.role, Model: m.Name, CompatHash: eng.CompatHash(), TP: ic.TP, DPRank: dp, URL: u, EngineID: id}
					unit.register = func(ctx context.Context) (func(), error) {
						return registerInstance(ctx, o.disc, o.discPrefix, in, o.discTTL, elog)
					}
				}
				units = append(units, unit)
			}
			return runHTTP(cmd.Context(), units, log, o.drainTimeout)
		},
	}
	f := c.Flags()
	f.StringVar(&o.role, "role", "both", "prefill, decode or both")
	f.StringVar(&o.model, "model", "qwen3.5-27b", "preset name, Hugging Face config.json or hybridxfer model JSON")
	f.StringVar(&o.host, "host", "127.0.0.1", "address peers use to reach this instance (kv_transfer_params remote_host); UCX and ZeroMQ bind only its interface")
	f.StringVar(&o.listen, "listen", "127.0.0.1", "HTTP listen address")
	f.IntVar(&o.port, "port", 8100, "HTTP port (data-parallel rank r: port+r)")
	f.IntVar(&o.hsPort, "handshake-port", 0, "prefill: ZeroMQ handshake port (0: any free port; data-parallel rank r: handshake-port+r)")
	f.IntVar(&o.dpSize, "data-parallel-size", 1, "data-parallel ranks of this instance: each its own engine, HTTP port port+r and handshake port handshake-port+r (the proxy lists each rank's URL)")
	f.StringVar(&o.disc, "discovery", "", "etcd://HOST:PORT[,HOST:PORT...]: register this instance (each data-parallel rank) there under a lease kept alive; deregistered when it drains")
	f.StringVar(&o.discPrefix, "discovery-prefix", discovery.DefaultPrefix, "the etcd key prefix of this deployment's records")
	f.StringVar(&o.advertise, "advertise-url", "", "with --discovery: the HTTP URL proxies reach this instance at (default http://HOST:PORT, rank r at PORT+r)")
	f.DurationVar(&o.discTTL, "discovery-ttl", discovery.DefaultTTL, "with --discovery: the registration's lease; a killed instance leaves the proxies this long after it stopped")
	f.IntVar(&o.dpRank, "data-parallel-rank", -1, "run only this data-parallel rank in this process (one process per rank); -1: every rank in this process")
	f.IntVar(&o.numBlocks, "num-blocks", 1024, "blocks per pool")
	f.Uint64Var(&o.seed, "seed", 1, "reference model weights seed (must match across instances)")
	f.DurationVar(&o.leaseTTL, "lease-ttl", 30*time.Second, "prefill: how long a finished request's state waits for its readers")
	f.BoolVar(&o.bidirectional, "bidirectional", false, "multi-turn conversations read back from decode (D -> P): decode holds each finished request for the next turn and answers with its export; prefill reads a request's previous turn from there (every prefill and decode instance of the deployment needs it)")
	f.DurationVar(&o.conversationTTL, "conversation-ttl", 60*time.Second, "decode with --bidirectional: how long a finished request waits for the conversation's next turn")
	f.DurationVar(&o.drainTimeout, "drain-timeout", 2*time.Minute, "on SIGTERM or POST /admin/drain: how long to wait for requests in flight and held leases (prefill: at most --lease-ttl after the last request) before stopping anyway with an error")
	f.DurationVar(&o.xferTimeout, "transfer-timeout", 10*time.Second, "decode: a load taking longer fails")
	f.DurationVar(&o.heartbeat, "heartbeat-interval", time.Second, "decode: heartbeat interval for requests being loaded (extends the prefill lease; a prefill silent for 5 intervals is declared failed)")
	f.IntVar(&o.maxModelLen, "max-model-len", 8192, "prompt + max_tokens above this are refused with 400")
	f.Int64Var(&o.stagingBytes, "staging-bytes", 64<<20, "per rank staging pool (prefill: gathers; decode: scratch), split into per-request ranges")
	o.mem.add(f)
	f.Float64Var(&o.dropNotify, "fault-drop-notify", 0, "testing: lose this share (0..1) of the control messages every rank sends")
	_ = f.MarkHidden("fault-drop-notify")
	f.StringVar(&o.handoff, "handoff", string(backend.DecodeComputesLast), "prefill: decode-computes-last or prefill-samples-first")
	f.StringVar(&o.policy, "kv-load-failure-policy", backend.PolicyFail, "decode: fail (error to the client) or recompute")
	f.StringVar(&o.mode, "mode", "auto", "decode: read shaping, direct, staged or auto")
	o.ux.register(c, false)
	f.StringVar(&o.apiKeyFile, "api-key-file", "", "client API keys, one per line (mode 0600): every request but /health and /metrics needs Authorization: Bearer KEY (or the proxy's internal token)")
	f.StringVar(&o.hsKey, "handshake-key", "", "this instance's CURVE secret key (hybridxfer keys curve): prefill: the handshake server's; decode: its client key")
	f.StringVar(&o.hsAllow, "handshake-allow", "", "prefill: the decode instances' CURVE public keys allowed to handshake, one per line")
	f.StringVar(&o.hsPub, "handshake-server-pub", "", "decode: the prefill instances' CURVE public key (.pub)")
	f.StringVar(&o.clusterKeyFile, "cluster-key-file", "", "the cluster key (hybridxfer keys cluster): signs and verifies kv_transfer_params grants; the same file on every instance and the proxy")
	cacheModeFlag(c, &o.cacheMode, "", "")
	o.mf.register(c)
	o.inst.register(c, "", 1)
	o.logs.register(c)
	return c
}

// loadClusterKey reads --cluster-key-file; without one it warns that
// kv_transfer_params can be minted by anyone who reaches an instance.
func loadClusterKey(path string, log *slog.Logger) (*grant.Key, error) {
	if path == "" {
		log.Warn("no --cluster-key-file: kv_transfer_params grants are not authenticated; anyone who reaches this instance's API can mint them (see docs/security.md)")
		return nil, nil
	}
	return grant.LoadKey(path)
}

// httpUnit is one HTTP server of a process: an instance's data-parallel
// rank (with its engine as drainer) or the proxy (no drainer).
type httpUnit struct {
	addr, banner string
	h            http.Handler
	d            backend.Drainer // nil: no drain
	// register, when set, registers the unit once it serves (discovery)
	// and returns its deregistration, called when the unit stops: at the
	// start of a drain, so proxies stop routing to it at once.
	register func(ctx context.Context) (deregister func(), err error)
}

// runHTTP serves every unit until the context ends or SIGINT/SIGTERM,
// then shuts down. A unit with a drainer (an instance) drains first, on
// the first signal (every unit) or POST /admin/drain (that unit): /health
// turns 503, new requests are refused, and the unit waits until
// everything in flight and held is done (at most drainTimeout) before it
// stops serving; a second signal stops at once with an error (exit
// status 1). runHTTP returns once every unit has stopped.
func runHTTP(ctx context.Context, units []httpUnit, log *slog.Logger, drainTimeout time.Duration) error {
	var lns []net.Listener
	for _, u := range units {
		ln, err := net.Listen("tcp", u.addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return err
		}
		lns = append(lns, ln)
	}
	// Register (discovery) once every unit listens, before any serves; a
	// failure undoes what was done and stops.
	deregs := make([]func(), len(units))
	for i, u := range units {
		deregs[i] = func() {}
		if u.register == nil {
			continue
		}
		dereg, err := u.register(ctx)
		if err != nil {
			for _, d := range deregs[:i] {
				d()
			}
			for _, l := range lns {
				l.Close()
			}
			return err
		}
		deregs[i] = dereg
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	stop, forced := make(chan struct{}), make(chan struct{})
	var once sync.Once
	go func() {
		select {
		case sig := <-sigs:
			log.Info("signal: stopping (instances drain first; a second signal stops at once)", "signal", sig.String())
			// stop first: a unit that sees its drain begin then also
			// sees stop closed and does not log it as an HTTP drain.
			once.Do(func() { close(stop) })
			for _, u := range units {
				if u.d != nil {
					u.d.BeginDrain()
				}
			}
		case <-ctx.Done():
			return
		}
		select {
		case <-sigs:
			close(forced)
		case <-ctx.Done():
		}
	}()
	errs := make([]error, len(units))
	var wg sync.WaitGroup
	for i, u := range units {
		srv := &http.Server{Handler: u.h, ReadHeaderTimeout: 10 * time.Second}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(lns[i]) }()
		log.Info(u.banner)
		deregister := deregs[i]
		fmt.Fprintln(os.Stdout, "READY", "http://"+lns[i].Addr().String())
		wg.Go(func() {
			defer deregister()
			var draining <-chan struct{}
			if u.d != nil {
				draining = u.d.Draining()
			}
			drain := u.d != nil
			select {
			case err := <-served:
				errs[i] = err
				return
			case <-ctx.Done():
				drain = false // the caller is stopping us
			case <-stop:
			case <-draining:
				select {
				case <-stop: // the signal's drain
				default:
					log.Info("drain requested over HTTP (a signal stops at once)", "addr", u.addr)
				}
			}
			if drain {
				deregister() // proxies stop routing here before the drain waits
				errs[i] = waitDrained(ctx, u.d, forced, drainTimeout, log)
			}
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs[i] = errors.Join(errs[i], err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// errDrainInterrupted: a second signal stopped a drain.
var errDrainInterrupted = errors.New("hybridxfer: drain interrupted by a second signal")

// waitDrained waits until d is drained, forced closes (an error: the
// operator stopped the drain), drainTimeout passes (an error naming what
// was still held) or ctx ends.
func waitDrained(ctx context.Context, d backend.Drainer, forced <-chan struct{}, drainTimeout time.Duration, log *slog.Logger) error {
	dctx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	go func() {
		select {
		case <-forced:
			cancel()
		case <-dctx.Done():
		}
	}()
	err := d.WaitDrained(dctx)
	select {
	case <-forced:
		return fmt.Errorf("%w: %v", errDrainInterrupted, err)
	default:
	}
	if err != nil {
		return err
	}
	log.Info("drained: nothing in flight or held; stopping")
	return nil
}

func proxyCmd() *cobra.Command {
	var (
		prefill, decode, listen string
		port                    int
		healthInterval          time.Duration
		apiKeyFile, clusterKey  string
		disc, discPrefix, model string
		logs                    logFlags
	)
	c := &cobra.Command{
		Use:   "proxy (--prefill URL[,URL...] --decode URL[,URL...] | --discovery etcd://HOST:PORT) --port P",
		Short: "OpenAI-compatible proxy: prefill on a P instance, decode on a D instance, stream D's answer",
		Long: `proxy serves the OpenAI API (/v1/completions, /v1/chat/completions, /v1/models,
/health, /metrics): it validates a request, prefills it on a prefill instance, decodes it on a
decode instance with the prefill's kv_transfer_params, and streams the answer.

Security (docs/security.md): --api-key-file makes every request but /health need
"Authorization: Bearer KEY" (401 otherwise); the client's Authorization is never sent
to the instances. --cluster-key-file (the instances' file) derives the internal token
the proxy sends to the instances as X-Hybridxfer-Internal: instances started with a
cluster key accept kv_transfer_params and aborts only with it. Clients may not send
kv_transfer_params themselves (400).

Discovery (docs/scaling.md): with --discovery etcd://HOST:PORT[,...] instead of the URL
lists, the proxy routes to the instances registered there (serve --discovery), as they
come and go: a draining instance leaves at once, a killed one when its lease expires.
Decode legs then go only to decode instances with the prefill instance's compatibility
hash; --model keeps only instances of that model.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logs.logger(os.Stderr)
			if err != nil {
				return err
			}
			opts := proxy.Options{Client: &http.Client{Timeout: 5 * time.Minute}, Log: log, HealthInterval: healthInterval,
				Registry: prometheus.NewRegistry()}
			if apiKeyFile != "" {
				keys, err := openai.LoadAPIKeys(apiKeyFile)
				if err != nil {
					return err
				}
				opts.APIKeys = keys
			} else {
				log.Warn("no --api-key-file: the proxy serves any client that reaches it")
			}
			if clusterKey != "" {
				key, err := grant.LoadKey(clusterKey)
				if err != nil {
					return err
				}
				opts.InternalToken = key.InternalToken()
			} else {
				log.Warn("no --cluster-key-file: the proxy sends no internal token; instances started with a cluster key refuse its requests (403)")
			}
			if (disc != "") == (prefill != "" || decode != "") {
				return fmt.Errorf("%w: give either --prefill and --decode, or --discovery", errFlag)
			}
			opts.Dynamic = disc != ""
			p, err := proxy.NewWithOptions(splitList(prefill), splitList(decode), opts)
			if err != nil {
				return err
			}
			defer p.Close()
			addr := net.JoinHostPort(listen, fmt.Sprint(port))
			banner := fmt.Sprintf("proxy on http://%s (prefill %s, decode %s)", addr, prefill, decode)
			if disc != "" {
				stop, err := watchUpstreams(cmd.Context(), p, disc, discPrefix, model, log)
				if err != nil {
					return err
				}
				defer stop()
				banner = fmt.Sprintf("proxy on http://%s (instances from %s%s)", addr, disc, discPrefix)
			}
			return runHTTP(cmd.Context(), []httpUnit{{addr: addr, h: p, banner: banner}}, log, 0)
		},
	}
	c.Flags().StringVar(&prefill, "prefill", "", "prefill instance URLs, comma-separated")
	c.Flags().StringVar(&decode, "decode", "", "decode instance URLs, comma-separated")
	c.Flags().StringVar(&disc, "discovery", "", "etcd://HOST:PORT[,HOST:PORT...]: route to the instances registered there instead of --prefill/--decode")
	c.Flags().StringVar(&discPrefix, "discovery-prefix", discovery.DefaultPrefix, "the etcd key prefix of this deployment's records")
	c.Flags().StringVar(&model, "model", "", "with --discovery: route only to instances serving this model (default: any)")
	c.Flags().StringVar(&listen, "listen", "127.0.0.1", "listen address")
	c.Flags().IntVar(&port, "port", 8000, "port")
	c.Flags().DurationVar(&healthInterval, "health-interval", proxy.DefaultHealthInterval,
		"how often every instance's /health is probed; a failing instance is excluded until it answers 200")
	c.Flags().StringVar(&apiKeyFile, "api-key-file", "",
		"client API keys, one per line ('#' comments), mode 0600: every request but /health needs Authorization: Bearer KEY")
	c.Flags().StringVar(&clusterKey, "cluster-key-file", "",
		"the instances' cluster key: derives the internal token sent to them as X-Hybridxfer-Internal")
	logs.register(c)
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
