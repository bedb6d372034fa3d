package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/hybridxfer/hybridxfer/discovery"
	"github.com/hybridxfer/hybridxfer/proxy"
)

// advertiseURL is data-parallel rank dp's URL: base with its port + dp.
func advertiseURL(base string, dp int) (string, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" {
		return "", fmt.Errorf("%w --advertise-url: %q (want http://HOST:PORT)", errFlag, base)
	}
	port, _ := strconv.Atoi(u.Port())
	u.Host = net.JoinHostPort(u.Hostname(), strconv.Itoa(port+dp))
	return u.String(), nil
}

// registerInstance registers in on the etcd at disc and returns its
// deregistration (idempotent, bounded by 5 s).
func registerInstance(ctx context.Context, disc, prefix string, in discovery.Instance, ttl time.Duration, log *slog.Logger) (func(), error) {
	cli, err := discovery.Connect(disc)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	reg, err := discovery.Register(rctx, cli, prefix, in, ttl, log)
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("--discovery %s: %w (is etcd running and reachable there?)", disc, err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := reg.Deregister(dctx); err != nil {
				log.Warn("deregister failed; the record goes when its lease expires", "err", err)
			}
			cli.Close()
		})
	}, nil
}

// watchUpstreams keeps p's instances equal to the prefill and decode
// instances registered on the etcd at disc (of model, when not "").
func watchUpstreams(ctx context.Context, p *proxy.Proxy, disc, prefix, model string, log *slog.Logger) (stop func(), err error) {
	cli, err := discovery.Connect(disc)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		discovery.Watch(wctx, cli, prefix, log, func(all []discovery.Instance) {
			var ps, ds []proxy.Upstream
			for _, in := range all {
				if model != "" && in.Model != model {
					continue
				}
				u := proxy.Upstream{URL: in.URL, CompatHash: in.CompatHash}
				switch in.Role {
				case "prefill":
					ps = append(ps, u)
				case "decode":
					ds = append(ds, u)
				}
			}
			if err := p.SetUpstreams(ps, ds); err != nil {
				log.Warn("discovery: ignoring an update", "err", err)
			}
		})
	}()
	return func() {
		cancel()
		<-done
		cli.Close()
	}, nil
}
