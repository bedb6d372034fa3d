package discovery

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Embedded is an etcd server running inside this process (the demo, the
// tests): a single member on 127.0.0.1, its data in a temporary directory
// removed by Close.
type Embedded struct {
	etcd *embed.Etcd
	dir  string
	// Endpoint is the --discovery value that reaches it
	// (etcd://127.0.0.1:PORT).
	Endpoint string
}

// StartEmbedded starts an embedded etcd on free 127.0.0.1 ports and waits
// until it serves.
func StartEmbedded() (*Embedded, error) {
	dir, err := os.MkdirTemp("", "hybridxfer-etcd-")
	if err != nil {
		return nil, err
	}
	client, peer, err := freeURLs()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = "hybridxfer"
	cfg.Dir = dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.UnsafeNoFsync = true // a throwaway member: its data dies with it
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("discovery: start embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("discovery: embedded etcd not ready after 60s")
	}
	return &Embedded{etcd: e, dir: dir, Endpoint: "etcd://" + client.Host}, nil
}

// Close stops the server and removes its data.
func (e *Embedded) Close() {
	e.etcd.Close()
	os.RemoveAll(e.dir)
}

func freeURLs() (client, peer *url.URL, err error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		ls = append(ls, l)
	}
	return &url.URL{Scheme: "http", Host: ls[0].Addr().String()}, &url.URL{Scheme: "http", Host: ls[1].Addr().String()}, nil
}

// quietZap is the etcd client's logger: errors only (the client logs its
// retries at warn; ours say what matters).
func quietZap() *zap.Logger {
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	l, err := cfg.Build()
	if err != nil {
		return zap.NewNop()
	}
	return l
}
