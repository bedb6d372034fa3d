package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Sentinel errors.
var (
	ErrEndpoint = errors.New("discovery: bad endpoint")
	ErrRecord   = errors.New("discovery: bad instance record")
)

// DefaultPrefix is where records live unless the operator names another
// prefix (several deployments may share one etcd).
const DefaultPrefix = "/hybridxfer"

// DefaultTTL is the lease of a registration: a killed instance is gone
// from every proxy this long after it stopped keeping the lease alive.
const DefaultTTL = 5 * time.Second

// Instance is the record an instance registers.
type Instance struct {
	Role       string `json:"role"` // prefill, decode or both
	Model      string `json:"model"`
	CompatHash string `json:"compat_hash"`
	TP         int    `json:"tp"`
	DPRank     int    `json:"dp_rank"`
	URL        string `json:"url"` // its HTTP API, as the proxy reaches it
	EngineID   string `json:"engine_id"`
}

func (in Instance) key(prefix string) string {
	return strings.TrimRight(prefix, "/") + "/instances/" + in.Role + "/" + in.EngineID
}

func (in Instance) check() error {
	switch {
	case in.Role != "prefill" && in.Role != "decode" && in.Role != "both":
		return fmt.Errorf("%w: role %q", ErrRecord, in.Role)
	case in.EngineID == "" || strings.Contains(in.EngineID, "/"):
		return fmt.Errorf("%w: engine id %q", ErrRecord, in.EngineID)
	}
	u, err := url.Parse(in.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: url %q", ErrRecord, in.URL)
	}
	return nil
}

// Endpoints parses "etcd://host:port[,host:port...]" (a scheme on every
// element is accepted too) into etcd client endpoints.
func Endpoints(s string) ([]string, error) {
	rest, ok := strings.CutPrefix(s, "etcd://")
	if !ok || rest == "" {
		return nil, fmt.Errorf("%w: %q (want etcd://host:port[,host:port...])", ErrEndpoint, s)
	}
	var out []string
	for _, hp := range strings.Split(rest, ",") {
		hp = strings.TrimPrefix(strings.TrimSpace(hp), "etcd://")
		if hp == "" || strings.ContainsAny(hp, "/?#@") || !strings.Contains(hp, ":") {
			return nil, fmt.Errorf("%w: %q in %q (want host:port)", ErrEndpoint, hp, s)
		}
		out = append(out, "http://"+hp)
	}
	return out, nil
}

// Connect returns an etcd client for a --discovery value.
func Connect(s string) (*clientv3.Client, error) {
	eps, err := Endpoints(s)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: quietZap()})
	if err != nil {
		return nil, fmt.Errorf("discovery: connect to %s: %w", s, err)
	}
	return cli, nil
}

// Registration keeps one instance's record alive.
type Registration struct {
	cli    *clientv3.Client
	key    string
	ttl    time.Duration
	log    *slog.Logger
	val    []byte
	mu     sync.Mutex
	lease  clientv3.LeaseID
	cancel context.CancelFunc
	done   chan struct{}
	closed bool
}

// Register puts in under prefix with a lease of ttl (DefaultTTL when 0)
// and keeps the lease alive until Deregister; if the lease is lost (etcd
// unreachable for longer than ttl), it registers again once etcd answers.
func Register(ctx context.Context, cli *clientv3.Client, prefix string, in Instance, ttl time.Duration, log *slog.Logger) (*Registration, error) {
	if err := in.check(); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	val, _ := json.Marshal(in)
	r := &Registration{cli: cli, key: in.key(prefix), ttl: ttl, log: log.With("component", "discovery", "key", in.key(prefix)), val: val, done: make(chan struct{})}
	// The keep-alive lives as long as the registration, not ctx.
	kctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	ka, err := r.grant(ctx, kctx)
	if err != nil {
		cancel()
		return nil, err
	}
	go r.keep(kctx, ka)
	r.log.Info("registered", "ttl", ttl)
	return r, nil
}

// grant takes a new lease, puts the record under it (both bounded by ctx)
// and starts its keep-alive, which runs until kctx ends.
func (r *Registration) grant(ctx, kctx context.Context) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	secs := int64((r.ttl + time.Second - 1) / time.Second)
	g, err := r.cli.Grant(ctx, secs)
	if err != nil {
		return nil, fmt.Errorf("discovery: lease for %s: %w", r.key, err)
	}
	if _, err := r.cli.Put(ctx, r.key, string(r.val), clientv3.WithLease(g.ID)); err != nil {
		return nil, fmt.Errorf("discovery: put %s: %w", r.key, err)
	}
	r.mu.Lock()
	r.lease = g.ID
	r.mu.Unlock()
	ka, err := r.cli.KeepAlive(kctx, g.ID)
	if err != nil {
		return nil, fmt.Errorf("discovery: keep alive %s: %w", r.key, err)
	}
	return ka, nil
}

func (r *Registration) keep(ctx context.Context, ka <-chan *clientv3.LeaseKeepAliveResponse) {
	defer close(r.done)
	for {
		for range ka {
		}
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("lease lost; registering again")
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(r.ttl / 5):
			}
			gctx, cancel := context.WithTimeout(ctx, r.ttl)
			next, err := r.grant(gctx, ctx)
			cancel()
			if err == nil {
				ka = next
				r.log.Info("registered again")
				break
			}
			r.log.Warn("register again failed", "err", err)
		}
	}
}

// Deregister revokes the lease (the record is deleted at once) and stops
// keeping it alive. Idempotent.
func (r *Registration) Deregister(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	lease := r.lease
	r.mu.Unlock()
	r.cancel()
	_, err := r.cli.Revoke(ctx, lease)
	<-r.done
	if err != nil {
		return fmt.Errorf("discovery: revoke %s: %w", r.key, err)
	}
	r.log.Info("deregistered")
	return nil
}

// Watch reads the instances under prefix and calls fn with every live
// instance (sorted by role, then engine id) now and after every change,
// until ctx ends (it returns nil then) or the watch fails for good. A
// record that does not decode is skipped and logged.
func Watch(ctx context.Context, cli *clientv3.Client, prefix string, log *slog.Logger, fn func([]Instance)) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	root := strings.TrimRight(prefix, "/") + "/instances/"
	for {
		live := map[string]Instance{}
		resp, err := cli.Get(ctx, root, clientv3.WithPrefix())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Warn("discovery: list failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		for _, kv := range resp.Kvs {
			put(live, string(kv.Key), kv.Value, log)
		}
		fn(sorted(live))
		wch := cli.Watch(ctx, root, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
		for wr := range wch {
			if err := wr.Err(); err != nil {
				log.Warn("discovery: watch failed; listing again", "err", err)
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					delete(live, string(ev.Kv.Key))
				} else {
					put(live, string(ev.Kv.Key), ev.Kv.Value, log)
				}
			}
			fn(sorted(live))
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

func put(live map[string]Instance, key string, val []byte, log *slog.Logger) {
	var in Instance
	if err := json.Unmarshal(val, &in); err != nil {
		log.Warn("discovery: skipping a record", "key", key, "err", fmt.Errorf("%w: %v", ErrRecord, err))
		return
	}
	if err := in.check(); err != nil {
		log.Warn("discovery: skipping a record", "key", key, "err", err)
		return
	}
	live[key] = in
}

func sorted(live map[string]Instance) []Instance {
	out := make([]Instance, 0, len(live))
	for _, in := range live {
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b Instance) int {
		if c := strings.Compare(a.Role, b.Role); c != 0 {
			return c
		}
		return strings.Compare(a.EngineID, b.EngineID)
	})
	return out
}
