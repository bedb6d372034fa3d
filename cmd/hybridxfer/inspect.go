package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hybridxfer/hybridxfer/backend"

	"github.com/hybridxfer/hybridxfer/openai"

	"github.com/spf13/cobra"
)

func inspectCmd() *cobra.Command {
	var (
		keyFile string
		request string
		asJSON  bool
		timeout time.Duration
	)
	c := &cobra.Command{
		Use:   "inspect URL [--request ID] [--json]",
		Short: "Print a running instance's pools, leases and peers (its /debug views) as tables",
		Long: `inspect reads GET /debug/pools, /debug/leases and /debug/peers of the instance at URL
(the serve --port URL, e.g. http://127.0.0.1:8101) and prints them as tables: the block
pools and KV cache groups with the allocator's counts, what a prefill instance holds for
decode instances (lease expiry, notifications), and the prefill incarnations a decode
instance knows with the loads in flight. With --request ID it prints that request (by
its id on the instance, or the client's request id). With --json it prints the views as
one JSON object. An instance with API keys needs --api-key-file.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			base, err := url.Parse(strings.TrimRight(args[0], "/"))
			if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
				return fmt.Errorf("%w URL: %q is not an http(s) URL of an instance", errFlag, args[0])
			}
			var key string
			if keyFile != "" {
				keys, err := openai.LoadAPIKeys(keyFile)
				if err != nil {
					return err
				}
				if len(keys) == 0 {
					return fmt.Errorf("%w --api-key-file: %s holds no key", errFlag, keyFile)
				}
				key = keys[0]
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			get := func(path string, v any) error { return debugGet(ctx, base.String()+path, key, v) }
			out := cmd.OutOrStdout()
			if request != "" {
				var reqs []backend.RequestView
				if err := get("/debug/requests/"+url.PathEscape(request), &reqs); err != nil {
					return err
				}
				if asJSON {
					return writeJSON(out, reqs)
				}
				printRequests(out, reqs)
				return nil
			}
			var v struct {
				Pools  backend.PoolsView  `json:"pools"`
				Leases backend.LeasesView `json:"leases"`
				Peers  backend.PeersView  `json:"peers"`
			}
			for _, x := range []struct {
				path string
				v    any
			}{{"/debug/pools", &v.Pools}, {"/debug/leases", &v.Leases}, {"/debug/peers", &v.Peers}} {
				if err := get(x.path, x.v); err != nil {
					return err
				}
			}
			if asJSON {
				return writeJSON(out, v)
			}
			printInspect(out, v.Pools, v.Leases, v.Peers)
			return nil
		},
	}
	c.Flags().StringVar(&keyFile, "api-key-file", "", "a file whose first key is sent as Authorization: Bearer (instances with --api-key-file)")
	c.Flags().StringVar(&request, "request", "", "print this request (its id on the instance or the client's id) instead")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "give up after this long")
	return c
}

// debugGet fetches one /debug view into v.
func debugGet(ctx context.Context, u, key string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("inspect: %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
			msg = e.Error.Message
		}
		return fmt.Errorf("inspect: %s: %s: %s", u, resp.Status, msg)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("inspect: %s: not a debug view: %w", u, err)
	}
	return nil
}

func printInspect(w io.Writer, pools backend.PoolsView, leases backend.LeasesView, peers backend.PeersView) {
	fmt.Fprintf(w, "%s: %s instance of %s, tp %d, %s memory, %s blocks, %d requests (%d held), at %s\n\n",
		pools.Engine, pools.Role, pools.Model, pools.TP, pools.Memory, pools.BlockLayout, pools.Requests, pools.Holds, pools.Time)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pool\tblocks\tfree\tused\tcached\theld\tregions\tblock bytes\t")
	for _, p := range pools.Pools {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", p.Pool, p.NumBlocks, p.Free, p.Used, p.Cached, p.Held, p.Regions, p.BlockStride)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "group\tkind\tlayers\tpool\tblock size\tpage bytes\tused\tcached\theld\t")
	for _, g := range pools.Groups {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", g.Group, g.Kind, g.Layers, g.Pool, g.BlockSize, g.PageBytes, g.Used, g.Cached, g.Held)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nleases: %d held; released since start: %d notified, %d expired, %d aborted\n",
		len(leases.Leases), leases.ReleasedNotified, leases.ReleasedExpired, leases.ReleasedAborted)
	if len(leases.Leases) > 0 {
		tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "request\texpires in\tnotified\t")
		for _, l := range leases.Leases {
			fmt.Fprintf(tw, "%s\t%.0f ms\t%d of %d\t\n", l.Request, l.RemainingMs, l.Notified, l.Consumers)
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\npeers: %d\n", len(peers.Peers))
	if len(peers.Peers) > 0 {
		tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "peer\tboot id\tstate\ttp\tclock offset\tblocks\terror\t")
		for _, p := range peers.Peers {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.3f ms\t%s\t%s\t\n", p.Peer, p.BootID, p.State, p.TP, p.ClockOffsetMs, p.BlockLayout, p.Error)
		}
		tw.Flush()
	}
	if len(peers.Loads) > 0 {
		fmt.Fprintf(w, "\nloads in flight: %d\n", len(peers.Loads))
		tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "request\ttransfer\tpeer\tstate\tlease expiry\t")
		for _, l := range peers.Loads {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t\n", l.Request, l.Transfer, l.Peer, l.State, l.LeaseExpiry)
		}
		tw.Flush()
	}
}

func printRequests(w io.Writer, reqs []backend.RequestView) {
	for _, r := range reqs {
		fmt.Fprintf(w, "%s: %s, %d tokens, %d computed, %d loading\n", r.Request, r.State, r.Tokens, r.Computed, r.Pending)
		if r.Lease != nil {
			fmt.Fprintf(w, "  lease: expires in %.0f ms, %d of %d notifications\n", r.Lease.RemainingMs, r.Lease.Notified, r.Lease.Consumers)
		}
		for g, ids := range r.Blocks {
			fmt.Fprintf(w, "  group %d blocks %v\n", g, ids)
			if g < len(r.Scratch) && len(r.Scratch[g]) > 0 {
				fmt.Fprintf(w, "  group %d scratch %v\n", g, r.Scratch[g])
			}
		}
	}
}
