package main

// `bench pattern` is the usual peer benchmark of transfer libraries (NIXL's
// nixlbench and the like): two processes on one host, one reader, N
// scattered blocks of S bytes moved by one request. It exists so that our
// numbers can be put next to published ones, and next to what the same
// machine does without us: raw UCX gets, a plain copy of the same bytes,
// and the best copy this machine does (internal/baseline).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hybridxfer/hybridxfer/internal/baseline"
	"github.com/hybridxfer/hybridxfer/internal/hostmem"
	"github.com/hybridxfer/hybridxfer/statexfer/transport"
	"github.com/hybridxfer/hybridxfer/statexfer/ucx"
	"github.com/spf13/cobra"
)

// defaultPatterns are nixlbench-like shapes of 256 MiB to 512 MiB: many
// small blocks (KV-cache pages of a few tokens), and few large ones.
const defaultPatterns = "4096x64KiB,16384x16KiB,256x2MiB"

// patternShape is one --patterns entry: Blocks blocks of BlockBytes bytes.
type patternShape struct {
	Blocks     int
	BlockBytes int64
}

func (s patternShape) bytes() int64 { return int64(s.Blocks) * s.BlockBytes }

func (s patternShape) String() string {
	return fmt.Sprintf("%dx%s", s.Blocks, formatSize(s.BlockBytes))
}

// parseSize reads a byte count: a plain integer, or one with a KiB, MiB
// or GiB suffix (case-insensitive; K, M, G and KB, MB, GB mean the same
// binary units).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	u := strings.ToUpper(t)
	mult := int64(1)
	for _, suf := range []struct {
		s []string
		m int64
	}{{[]string{"KIB", "KB", "K"}, 1 << 10}, {[]string{"MIB", "MB", "M"}, 1 << 20}, {[]string{"GIB", "GB", "G"}, 1 << 30}, {[]string{"B"}, 1}} {
		found := false
		for _, x := range suf.s {
			if strings.HasSuffix(u, x) {
				u, mult, found = strings.TrimSpace(strings.TrimSuffix(u, x)), suf.m, true
				break
			}
		}
		if found {
			break
		}
	}
	n, err := strconv.ParseInt(u, 10, 64)
	if err != nil || n < 1 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q (want a positive byte count, optionally with KiB, MiB or GiB)", s)
	}
	return n * mult, nil
}

// formatSize is the shortest exact form of n: 2MiB, 16KiB, 1000B.
func formatSize(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return fmt.Sprintf("%d%s", n/u.m, u.s)
		}
	}
	return fmt.Sprintf("%dB", n)
}

// parsePatterns reads "NxS,NxS,...".
func parsePatterns(s string) ([]patternShape, error) {
	var out []patternShape
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		ns, ss, ok := strings.Cut(strings.ToLower(part), "x")
		if !ok {
			return nil, fmt.Errorf("--patterns: %q is not BLOCKSxSIZE (e.g. 4096x64KiB)", part)
		}
		n, err := strconv.Atoi(strings.TrimSpace(ns))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--patterns: %q: bad block count %q", part, ns)
		}
		size, err := parseSize(ss)
		if err != nil {
			return nil, fmt.Errorf("--patterns: %q: %w", part, err)
		}
		out = append(out, patternShape{Blocks: n, BlockBytes: size})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--patterns: empty")
	}
	return out, nil
}

// patternRow is one line of `bench pattern`: medians over the iterations.
type patternRow struct {
	Blocks     int    `json:"blocks"`
	BlockBytes int64  `json:"block_bytes"`
	Bytes      int64  `json:"bytes"`
	Iterations int    `json:"iterations"`
	ErrMode    string `json:"ucx_error_mode"`
	// Ours: one Peer.ReadBatch of the N blocks, waited on, then a Notify.
	GBps float64 `json:"gbps"`
	// Ours on a transport with the mapped path disabled (UCX gets).
	OneSidedGBps float64 `json:"ucx_one_sided_gbps"`
	// ucp_get_nbx per block on the bare endpoint (Peer.RawRead).
	RawGBps float64 `json:"raw_ucx_gbps"`
	// copy() per block of the same source bytes.
	MemcpyGBps float64 `json:"memcpy_gbps"`
	// baseline.Limit of N*S bytes with every core.
	LimitGBps float64 `json:"limit_gbps"`
	// baseline.TCPStream of N*S bytes; only under UCX_TLS=...tcp...
	TCPGBps       float64 `json:"tcp_socket_gbps,omitempty"`
	VsMemcpy      float64 `json:"gbps_vs_memcpy"`
	VsLimit       float64 `json:"gbps_vs_limit"`
	OneSidedVsRaw float64 `json:"one_sided_vs_raw"`
	VsTCP         float64 `json:"gbps_vs_tcp_socket,omitempty"`
	Path          string  `json:"path"`               // Batch.Path of ours
	OneSidedPath  string  `json:"ucx_one_sided_path"` // Batch.Path of ours, mapping disabled
	RawPath       string  `json:"raw_ucx_path"`
	MemcpySource  string  `json:"memcpy_source"`
	LimitSource   string  `json:"limit_source"`
	LimitWorkers  int     `json:"limit_workers"`
	// From the end of ours' clock (Notify returned) until the reader read
	// the target's line reporting the notification: UCX's delivery plus
	// the target's handler and stdout pipe (an upper bound of delivery).
	NotifyLagUs    float64 `json:"notify_lag_us"`
	ByteMismatches int64   `json:"byte_mismatches"`
}

// patternTargetArgv is how `bench pattern` starts its target process: the
// command line and environment additions. Tests replace it.
var patternTargetArgv = func() ([]string, []string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	return []string{exe, "bench", "pattern", "target"}, nil, nil
}

func benchPatternCmd() *cobra.Command {
	var (
		patterns   string
		blocks     int
		blockSize  string
		iterations int
		seed       uint64
		asJSON     bool
		plotPath   string
		ux         ucxFlags
	)
	c := &cobra.Command{
		Use:   "pattern",
		Short: "Peer benchmark (nixlbench-like): N scattered blocks of S bytes, one reader; vs raw UCX, memcpy, the machine's limit",
		Long: `pattern starts a target process holding N*S bytes of UCX memory filled with a
pattern and reads, from this process, N blocks of S bytes scattered over it
(a random permutation of the target's blocks into blocks 0..N-1 here) as one
request, like the peer benchmarks of transfer libraries (nixlbench). Each
iteration times, in this order and over the same ranges:

  ours       Peer.ReadBatch of the N blocks, waited on, then Peer.Notify
             (the mapped path when UCX maps the target's memory)
  one-sided  the same on a transport with the mapped path disabled (UCX gets)
  raw        one ucp_get_nbx per block on the bare endpoint, no batch
             machinery (ucx.Peer.RawRead)
  memcpy     copy() per block from the mapped target memory into ours
  limit      internal/baseline.Limit of N*S bytes from the mapped target
             memory into ours, one goroutine per core
             (both copy from local memory holding the same pattern when
             the target's memory is not mapped, e.g. under UCX_TLS=tcp)
  tcp        (only when UCX_TLS names tcp) one loopback TCP stream of N*S
             bytes (internal/baseline.TCPStream)

after one untimed warm-up iteration, and reports medians. The destination of
ours is checked against the pattern after the last iteration (a mismatch
exits with status 2).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			shapes, err := parsePatterns(patterns)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("blocks") || cmd.Flags().Changed("block-size") {
				if cmd.Flags().Changed("patterns") {
					return fmt.Errorf("%w: give --patterns or --blocks/--block-size, not both", errFlag)
				}
				s, err := parseSize(blockSize)
				if err != nil {
					return fmt.Errorf("%w --block-size: %v", errFlag, err)
				}
				shapes = []patternShape{{Blocks: blocks, BlockBytes: s}}
			}
			var fc flagChecks
			fc.intIn("iterations", int64(iterations), 1, 1000)
			for _, s := range shapes {
				fc.intIn("blocks", int64(s.Blocks), 1, 1<<24)
				if s.bytes() > 64<<30 {
					fc.fail("patterns", "%s is %s, above 64 GiB", s, hostmem.GiB(s.bytes()))
				}
			}
			ux.check(&fc)
			if plotPath != "" {
				if ext := strings.ToLower(plotPath[strings.LastIndexByte(plotPath, '.')+1:]); ext != "svg" && ext != "png" {
					fc.fail("plot", "%q: want FILE.svg or FILE.png", plotPath)
				}
			}
			if err := fc.err(); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Minute)
			defer cancel()
			rows, err := runPatternBench(ctx, shapes, iterations, seed, ux)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if err := writeJSON(out, struct {
					Rows []patternRow `json:"rows"`
				}{rows}); err != nil {
					return err
				}
			} else if err := printPatternTable(out, rows, iterations); err != nil {
				return err
			}
			if plotPath != "" {
				if err := plotPatternRows(plotPath, rows); err != nil {
					return err
				}
			}
			var bad int64
			for _, r := range rows {
				bad += r.ByteMismatches
			}
			if bad != 0 {
				return &exitError{code: 2, err: fmt.Errorf("%d bytes read differ from the target's pattern", bad)}
			}
			return nil
		},
	}
	c.Flags().StringVar(&patterns, "patterns", defaultPatterns, "comma-separated BLOCKSxSIZE pairs (SIZE with KiB, MiB or GiB)")
	c.Flags().IntVar(&blocks, "blocks", 4096, "blocks of one pattern (with --block-size, instead of --patterns)")
	c.Flags().StringVar(&blockSize, "block-size", "64KiB", "block size of one pattern (with --blocks, instead of --patterns)")
	c.Flags().IntVar(&iterations, "iterations", 5, "timed iterations (after one untimed warm-up); medians are reported")
	c.Flags().Uint64Var(&seed, "seed", 1, "seed of the target's pattern and of the block permutation")
	c.Flags().BoolVar(&asJSON, "json", false, `print {"rows": [...]}`)
	c.Flags().StringVar(&plotPath, "plot", "", "also draw the bandwidths to FILE.svg or FILE.png")
	ux.register(c, true)
	c.AddCommand(patternTargetCmd())
	return c
}

func printPatternTable(out io.Writer, rows []patternRow, iterations int) error {
	tcp := false
	for _, r := range rows {
		tcp = tcp || r.TCPGBps > 0
	}
	fmt.Fprintf(out, "bench pattern: one reader, N blocks of S bytes scattered over the target (a random permutation), one request; GB/s = 1e9 B/s, medians of %d iterations\n", iterations)
	fmt.Fprintln(out, "  ours: Peer.ReadBatch + wait + Notify | one-sided: ours, mapped path off | raw: ucp_get_nbx per block, bare endpoint |")
	fmt.Fprintln(out, "  memcpy: copy() per block of the same source | limit: baseline.Limit of N*S bytes, one goroutine per core"+
		map[bool]string{true: " | tcp: one loopback TCP stream of N*S bytes", false: ""}[tcp])
	if len(rows) > 0 {
		fmt.Fprintf(out, "  memcpy source: %s; limit source: %s (%d goroutines)\n", rows[0].MemcpySource, rows[0].LimitSource, rows[0].LimitWorkers)
	}
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', tabwriter.AlignRight)
	hdr := "pattern\tbytes\tours\tone-sided\traw\tmemcpy\tlimit\t"
	if tcp {
		hdr += "tcp\t"
	}
	hdr += "ours/memcpy\tours/limit\tone-sided/raw\t"
	if tcp {
		hdr += "ours/tcp\t"
	}
	hdr += "path\tone-sided path\tmismatches\t"
	fmt.Fprintln(tw, hdr)
	for _, r := range rows {
		line := fmt.Sprintf("%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t", patternShape{r.Blocks, r.BlockBytes}, r.Bytes,
			r.GBps, r.OneSidedGBps, r.RawGBps, r.MemcpyGBps, r.LimitGBps)
		if tcp {
			line += fmt.Sprintf("%.2f\t", r.TCPGBps)
		}
		line += fmt.Sprintf("x%.2f\tx%.2f\tx%.2f\t", r.VsMemcpy, r.VsLimit, r.OneSidedVsRaw)
		if tcp {
			line += fmt.Sprintf("x%.2f\t", r.VsTCP)
		}
		line += fmt.Sprintf("%s\t%s\t%d\t", r.Path, r.OneSidedPath, r.ByteMismatches)
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

func plotPatternRows(path string, rows []patternRow) error {
	var labels []string
	series := []plotSeries{{Name: "ours"}, {Name: "one-sided"}, {Name: "raw UCX"}, {Name: "memcpy"}, {Name: "limit"}}
	for _, r := range rows {
		labels = append(labels, patternShape{r.Blocks, r.BlockBytes}.String())
		for i, v := range []float64{r.GBps, r.OneSidedGBps, r.RawGBps, r.MemcpyGBps, r.LimitGBps} {
			series[i].Values = append(series[i].Values, v)
		}
	}
	return plotBars(path, "bench pattern: N scattered blocks of S bytes, one reader", "GB/s", labels, series)
}

// ---- the pattern --------------------------------------------------------

// patternWord is the pattern's 8-byte word number k.
func patternWord(seed, k uint64) uint64 {
	z := seed*0x9e3779b97f4a7c15 + (k+1)*0xbf58476d1ce4e5b9
	z ^= z >> 31
	z *= 0x94d049bb133111eb
	z ^= z >> 29
	return z
}

// fillPattern writes the pattern of seed for offsets [off, off+len(b)).
func fillPattern(b []byte, off, seed uint64) {
	i := 0
	for ; i < len(b) && (off+uint64(i))%8 != 0; i++ {
		o := off + uint64(i)
		b[i] = byte(patternWord(seed, o/8) >> (8 * (o % 8)))
	}
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], patternWord(seed, (off+uint64(i))/8))
	}
	for ; i < len(b); i++ {
		o := off + uint64(i)
		b[i] = byte(patternWord(seed, o/8) >> (8 * (o % 8)))
	}
}

// countMismatches compares dst block i with the target's block perm[i].
func countMismatches(dst []byte, perm []int, blockBytes int64, seed uint64) int64 {
	want := make([]byte, blockBytes)
	var bad int64
	for i, src := range perm {
		got := dst[int64(i)*blockBytes : int64(i+1)*blockBytes]
		fillPattern(want, uint64(int64(src)*blockBytes), seed)
		if bytes.Equal(got, want) {
			continue
		}
		for k := range got {
			if got[k] != want[k] {
				bad++
			}
		}
	}
	return bad
}

// ---- the target process -------------------------------------------------

// patternTargetSpec is the first line the target reads.
type patternTargetSpec struct {
	UCX  ucxFlags `json:"ucx"`
	Seed uint64   `json:"seed"`
}

func patternTargetCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "target",
		Short:  "Internal: the target process of `bench pattern` (reads its spec on stdin)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runPatternTarget(os.Stdin, os.Stdout)
		},
	}
}

// runPatternTarget is the target of `bench pattern`. It reads a
// patternTargetSpec line, creates a UCX transport and answers
//
//	ADDR <base64 transport address>
//
// then serves commands until stdin closes:
//
//	ALLOC <id> <blocks> <block bytes>  ->  MEM <id> <base64 JSON MemDesc>
//	FREE <id>                          ->  FREED <id>
//
// ALLOC fills the region with the pattern of the spec's seed. Every
// notification received is reported as NOTIFY <peer id> <base64 message>.
// Errors are reported as ERROR <message>.
func runPatternTarget(in io.Reader, stdout io.Writer) error {
	out := &lineWriter{w: stdout}
	err := patternTarget(bufio.NewReader(in), out)
	if err != nil {
		out.line("ERROR", err.Error())
	}
	return err
}

func patternTarget(in *bufio.Reader, out *lineWriter) error {
	line, err := in.ReadString('\n')
	if err != nil {
		return fmt.Errorf("pattern target: read spec: %w", err)
	}
	var spec patternTargetSpec
	if err := json.Unmarshal([]byte(line), &spec); err != nil {
		return fmt.Errorf("pattern target: bad spec: %w", err)
	}
	spec.UCX.setWorkerLogger()
	cfg, err := spec.UCX.config("pattern-target")
	if err != nil {
		return err
	}
	tr, err := ucx.New(cfg, transport.Handlers{Notify: func(from transport.PeerID, msg []byte) {
		out.line("NOTIFY", fmt.Sprintf("%d %s", from, b64(msg)))
	}})
	if err != nil {
		return fmt.Errorf("pattern target: %w", err)
	}
	defer tr.Close()
	out.line("ADDR", b64(tr.Address()))
	mems := map[string]*ucx.Memory{}
	for {
		line, err := in.ReadString('\n')
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		f := strings.Fields(line)
		switch {
		case len(f) == 4 && f[0] == "ALLOC":
			n, err1 := strconv.ParseInt(f[2], 10, 64)
			s, err2 := strconv.ParseInt(f[3], 10, 64)
			if err1 != nil || err2 != nil || n < 1 || s < 1 {
				return fmt.Errorf("pattern target: bad %q", strings.TrimSpace(line))
			}
			if err := hostmem.Check(n*s, "bench pattern target memory"); err != nil {
				return err
			}
			m, err := tr.AllocMemory(int(n * s))
			if err != nil {
				return err
			}
			fillPattern(m.Bytes(), 0, spec.Seed)
			mems[f[1]] = m
			d, _ := json.Marshal(m.Desc())
			out.line("MEM", f[1]+" "+b64(d))
		case len(f) == 2 && f[0] == "FREE":
			if m, ok := mems[f[1]]; ok {
				m.Close()
				delete(mems, f[1])
			}
			out.line("FREED", f[1])
		default:
			return fmt.Errorf("pattern target: unknown command %q", strings.TrimSpace(line))
		}
	}
}

// startPatternTarget starts the target process.
func startPatternTarget(ctx context.Context, spec patternTargetSpec) (*worker, error) {
	argv, extraEnv, err := patternTargetArgv()
	if err != nil {
		return nil, err
	}
	return startProcess(ctx, "pattern target", argv, append(workerEnv(), extraEnv...), spec)
}

// ---- the reader -----------------------------------------------------------

// patternReader is the reading side: two transports, one with the mapped
// path (ours) and one without (ours one-sided, raw gets).
type patternReader struct {
	mapped, oneSided *ucx.Transport
	target           *worker
	targetAddr       []byte
	ux               ucxFlags
	seed             uint64
	iterations       int
	tcp              bool
	bar              progress // a step per iteration of every shape
}

func runPatternBench(ctx context.Context, shapes []patternShape, iterations int, seed uint64, ux ucxFlags) (rows []patternRow, err error) {
	var biggest int64
	for _, s := range shapes {
		biggest = max(biggest, s.bytes())
	}
	// Target N*S, ours N*S, one-sided N*S, and a local source when the
	// target's memory is not mapped.
	if err := hostmem.Check(4*biggest, fmt.Sprintf("bench pattern (4 x %s)", hostmem.GiB(biggest))); err != nil {
		return nil, err
	}
	r := &patternReader{ux: ux, seed: seed, iterations: iterations, tcp: strings.Contains(strings.ToLower(os.Getenv("UCX_TLS")), "tcp")}
	newTr := func(name string, noMap bool) (*ucx.Transport, error) {
		cfg, err := ux.config(name)
		if err != nil {
			return nil, err
		}
		cfg.DisableMapped = noMap
		// Like the target (workerEnv): tcp on loopback unless the
		// operator chose with UCX_NET_DEVICES.
		if _, ok := os.LookupEnv("UCX_NET_DEVICES"); !ok {
			cfg.UCX = map[string]string{"NET_DEVICES": "lo"}
		}
		return ucx.New(cfg, transport.Handlers{})
	}
	if r.mapped, err = newTr("pattern-reader", false); err != nil {
		return nil, err
	}
	defer r.mapped.Close()
	if r.oneSided, err = newTr("pattern-reader-one-sided", true); err != nil {
		return nil, err
	}
	defer r.oneSided.Close()
	if r.target, err = startPatternTarget(ctx, patternTargetSpec{UCX: ux, Seed: seed}); err != nil {
		return nil, err
	}
	defer func() {
		if serr := r.target.stop(20 * time.Second); serr != nil && err == nil {
			err = fmt.Errorf("pattern target: %w", serr)
		}
	}()
	a, err := r.target.expect(ctx, "ADDR")
	if err != nil {
		return nil, err
	}
	if r.targetAddr, err = unb64(a); err != nil {
		return nil, err
	}
	r.bar = newProgress(os.Stderr, len(shapes)*(iterations+1), "bench pattern")
	defer r.bar.Finish()
	for i, s := range shapes {
		row, err := r.run(ctx, i, s)
		if err != nil {
			return nil, fmt.Errorf("pattern %s: %w", s, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// run measures one pattern.
func (r *patternReader) run(ctx context.Context, idx int, s patternShape) (patternRow, error) {
	n := s.bytes()
	row := patternRow{Blocks: s.Blocks, BlockBytes: s.BlockBytes, Bytes: n, Iterations: r.iterations, ErrMode: r.ux.ErrMode}
	if r.ux.ErrMode == "" {
		row.ErrMode = "none"
	}
	id := strconv.Itoa(idx)
	if err := r.target.send("ALLOC", fmt.Sprintf("%s %d %d", id, s.Blocks, s.BlockBytes)); err != nil {
		return row, err
	}
	rest, err := r.target.expect(ctx, "MEM")
	if err != nil {
		return row, err
	}
	defer func() {
		if r.target.send("FREE", id) == nil {
			r.target.expect(ctx, "FREED")
		}
	}()
	gotID, db, _ := strings.Cut(rest, " ")
	raw, err := unb64(db)
	if gotID != id || err != nil {
		return row, fmt.Errorf("bad MEM answer %q", rest)
	}
	var desc transport.MemDesc
	if err := json.Unmarshal(raw, &desc); err != nil {
		return row, err
	}
	// Fresh endpoints per pattern: remote keys (and their mappings) live
	// until the peer closes.
	pm, err := r.mapped.ConnectPeer(ctx, r.targetAddr)
	if err != nil {
		return row, err
	}
	defer pm.Close()
	po, err := r.oneSided.ConnectPeer(ctx, r.targetAddr)
	if err != nil {
		return row, err
	}
	defer po.Close()
	rm, err := pm.ImportRemote(desc)
	if err != nil {
		return row, err
	}
	ro, err := po.ImportRemote(desc)
	if err != nil {
		return row, err
	}
	lm, err := r.mapped.AllocMemory(int(n))
	if err != nil {
		return row, err
	}
	defer lm.Close()
	lo, err := r.oneSided.AllocMemory(int(n))
	if err != nil {
		return row, err
	}
	defer lo.Close()

	// Dst block i <- src block perm[i], the same for every measurement.
	perm := rand.New(rand.NewPCG(r.seed, uint64(idx)+1)).Perm(s.Blocks)
	opsM := make([]transport.Op, s.Blocks)
	opsO := make([]transport.Op, s.Blocks)
	ranges := make([]ucx.Range, s.Blocks)
	for i, src := range perm {
		roff := uint64(int64(src) * s.BlockBytes)
		loff := uint64(int64(i) * s.BlockBytes)
		ranges[i] = ucx.Range{RemoteOff: roff, LocalOff: loff, Len: uint64(s.BlockBytes)}
		opsM[i] = transport.Op{Local: lm, LocalOff: loff, Remote: rm, RemoteOff: roff, Len: uint64(s.BlockBytes)}
		opsO[i] = opsM[i]
		opsO[i].Local, opsO[i].Remote = lo, ro
	}

	// Sources of the copy baselines: the target's memory as mapped into
	// this process, or (not mapped, e.g. memory UCX could not allocate as
	// shared memory) a local buffer holding the same pattern.
	memcpySrc := rm.MappedBytes()
	row.MemcpySource, row.LimitSource = "target memory mapped by ucp_rkey_ptr", "target memory mapped by ucp_rkey_ptr"
	if memcpySrc == nil {
		local, err := r.mapped.AllocMemory(int(n))
		if err != nil {
			return row, err
		}
		defer local.Close()
		fillPattern(local.Bytes(), 0, r.seed)
		memcpySrc = local.Bytes()
		row.MemcpySource, row.LimitSource = "local UCX memory holding the pattern (target memory not mapped)", "local UCX memory holding the pattern (target memory not mapped)"
	}
	row.LimitWorkers = runtime.GOMAXPROCS(0)

	seq := 0
	ours := func(p *ucx.Peer, ops []transport.Op, tag string) (time.Duration, time.Duration, ucx.Path, error) {
		seq++
		msg := []byte(fmt.Sprintf("bench-pattern %d %s %d", idx, tag, seq))
		bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		t0 := time.Now()
		b, err := p.ReadBatch(ops)
		if err != nil {
			return 0, 0, 0, err
		}
		if res := transport.Wait(bctx, b); res.Err != nil {
			return 0, 0, 0, res.Err
		}
		if err := p.Notify(msg); err != nil {
			return 0, 0, 0, err
		}
		el := time.Since(t0)
		nctx, ncancel := context.WithTimeout(ctx, 30*time.Second)
		defer ncancel()
		for {
			rest, err := r.target.expect(nctx, "NOTIFY")
			if err != nil {
				return 0, 0, 0, fmt.Errorf("the target did not report notification %q: %w", msg, err)
			}
			_, m, _ := strings.Cut(rest, " ")
			if got, err := unb64(m); err == nil && bytes.Equal(got, msg) {
				break
			}
		}
		return el, time.Since(t0) - el, b.Path(), nil
	}
	var gOurs, gOne, gRaw, gMemcpy, gLimit, gTCP, notifyLag []float64
	for it := -1; it < r.iterations; it++ { // -1: untimed warm-up
		last := it == r.iterations-1
		if last { // the check below must not pass on an earlier iteration's bytes
			clear(lm.Bytes())
			clear(lo.Bytes())
		}
		// (a) ours, mapped path.
		d, lag, path, err := ours(pm, opsM, "ours")
		if err != nil {
			return row, fmt.Errorf("ours: %w", err)
		}
		row.Path = path.String()
		if last {
			row.ByteMismatches += countMismatches(lm.Bytes(), perm, s.BlockBytes, r.seed)
		}
		// (a') ours, mapped path off.
		d1, _, path1, err := ours(po, opsO, "one-sided")
		if err != nil {
			return row, fmt.Errorf("ours, one-sided: %w", err)
		}
		row.OneSidedPath = path1.String()
		if last {
			row.ByteMismatches += countMismatches(lo.Bytes(), perm, s.BlockBytes, r.seed)
		}
		// (b) raw UCX gets.
		rr, err := po.RawRead(lo, ro, ranges, false)
		if err != nil {
			return row, fmt.Errorf("raw UCX: %w", err)
		}
		row.RawPath = rr.Path.String()
		// (c) memcpy of the same ranges from the same source.
		var dm time.Duration
		if rm.Mapped() {
			mr, err := pm.RawRead(lm, rm, ranges, true)
			if err != nil {
				return row, fmt.Errorf("memcpy: %w", err)
			}
			dm = mr.Elapsed
		} else {
			dst := lm.Bytes()
			t0 := time.Now()
			for _, g := range ranges {
				copy(dst[g.LocalOff:g.LocalOff+g.Len], memcpySrc[g.RemoteOff:g.RemoteOff+g.Len])
			}
			dm = time.Since(t0)
		}
		// (d) the machine's limit.
		dl := baseline.Limit(lm.Bytes(), memcpySrc, 0)
		// (e) a loopback TCP stream, under UCX_TLS=tcp.
		var dt time.Duration
		if r.tcp {
			if dt, err = baseline.TCPStream(n, 0); err != nil {
				return row, err
			}
		}
		r.bar.Add(1)
		if it < 0 {
			continue
		}
		gOurs = append(gOurs, baseline.GBps(n, d))
		notifyLag = append(notifyLag, float64(lag.Nanoseconds())/1e3)
		gOne = append(gOne, baseline.GBps(n, d1))
		gRaw = append(gRaw, baseline.GBps(n, rr.Elapsed))
		gMemcpy = append(gMemcpy, baseline.GBps(n, dm))
		gLimit = append(gLimit, baseline.GBps(n, dl))
		if r.tcp {
			gTCP = append(gTCP, baseline.GBps(n, dt))
		}
	}
	row.GBps, row.OneSidedGBps, row.RawGBps = baseline.Median(gOurs), baseline.Median(gOne), baseline.Median(gRaw)
	row.MemcpyGBps, row.LimitGBps, row.TCPGBps = baseline.Median(gMemcpy), baseline.Median(gLimit), baseline.Median(gTCP)
	row.NotifyLagUs = baseline.Median(notifyLag)
	row.VsMemcpy, row.VsLimit, row.OneSidedVsRaw = ratio(row.GBps, row.MemcpyGBps), ratio(row.GBps, row.LimitGBps), ratio(row.OneSidedGBps, row.RawGBps)
	if r.tcp {
		row.VsTCP = ratio(row.GBps, row.TCPGBps)
	}
	return row, nil
}

// ratio is a/b, 0 when the baseline b is missing (0).
func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}
