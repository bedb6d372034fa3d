package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// envPatternTarget makes TestPatternTargetProcess act as the target of
// `bench pattern` (the test binary re-executed, like the ucx package's
// helper processes), so the tests need no built CLI.
const envPatternTarget = "HYBRIDXFER_TEST_PATTERN_TARGET"

func TestPatternTargetProcess(t *testing.T) {
	if os.Getenv(envPatternTarget) != "1" {
		t.Skip("the target process of the bench pattern tests")
	}
	in := io.Reader(os.Stdin)
	if os.Getenv(envPatternTargetWrongSeed) == "1" {
		// Serve another pattern than the reader expects.
		br := bufio.NewReader(os.Stdin)
		line, _ := br.ReadString('\n')
		var spec patternTargetSpec
		json.Unmarshal([]byte(line), &spec)
		spec.Seed++
		b, _ := json.Marshal(spec)
		in = io.MultiReader(bytes.NewReader(append(b, '\n')), br)
	}
	if err := runPatternTarget(in, os.Stdout); err != nil {
		os.Exit(3)
	}
	os.Exit(0)
}

// envPatternTargetWrongSeed makes the test target fill another pattern.
const envPatternTargetWrongSeed = "HYBRIDXFER_TEST_PATTERN_TARGET_WRONG_SEED"

// useTestTarget points `bench pattern` at this test binary.
func useTestTarget(t *testing.T, env ...string) {
	t.Helper()
	old := patternTargetArgv
	patternTargetArgv = func() ([]string, []string, error) {
		return []string{os.Args[0], "-test.run=^TestPatternTargetProcess$"}, append([]string{envPatternTarget + "=1"}, env...), nil
	}
	t.Cleanup(func() { patternTargetArgv = old })
	if _, ok := os.LookupEnv("UCX_NET_DEVICES"); !ok {
		t.Setenv("UCX_NET_DEVICES", "lo")
	}
}

func runBenchPattern(t *testing.T, args ...string) (string, error) {
	t.Helper()
	c := benchPatternCmd()
	var out bytes.Buffer
	c.SetOut(&out)
	c.SetErr(&out)
	c.SetArgs(args)
	c.SilenceUsage = true
	err := c.Execute()
	return out.String(), err
}

func TestBenchPatternJSON(t *testing.T) {
	useTestTarget(t)
	plot := filepath.Join(t.TempDir(), "pattern.svg")
	out, err := runBenchPattern(t, "--patterns", "64x4KiB,3x5000", "--iterations", "1", "--json", "--plot", plot)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var res struct {
		Rows []map[string]any `json:"rows"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(res.Rows) != 2 {
		t.Fatalf("%d rows:\n%s", len(res.Rows), out)
	}
	fields := []string{"blocks", "block_bytes", "bytes", "gbps", "ucx_one_sided_gbps", "raw_ucx_gbps", "memcpy_gbps", "limit_gbps",
		"gbps_vs_memcpy", "gbps_vs_limit", "one_sided_vs_raw", "path", "ucx_one_sided_path", "byte_mismatches"}
	if strings.Contains(os.Getenv("UCX_TLS"), "tcp") {
		fields = append(fields, "tcp_socket_gbps", "gbps_vs_tcp_socket")
	}
	want := [][2]float64{{64, 4096}, {3, 5000}}
	for i, row := range res.Rows {
		for _, f := range fields {
			if _, ok := row[f]; !ok {
				t.Errorf("row %d lacks %q: %v", i, f, row)
			}
		}
		blocks, _ := row["blocks"].(float64)
		bb, _ := row["block_bytes"].(float64)
		n, _ := row["bytes"].(float64)
		if blocks != want[i][0] || bb != want[i][1] || n != blocks*bb {
			t.Errorf("row %d: blocks %v, block_bytes %v, bytes %v", i, blocks, bb, n)
		}
		if m, _ := row["byte_mismatches"].(float64); m != 0 {
			t.Errorf("row %d: %v byte mismatches", i, m)
		}
		for _, f := range []string{"gbps", "ucx_one_sided_gbps", "raw_ucx_gbps", "memcpy_gbps", "limit_gbps"} {
			if v, _ := row[f].(float64); !(v > 0) {
				t.Errorf("row %d: %s = %v", i, f, row[f])
			}
		}
		if p, _ := row["path"].(string); p == "" || p == "none" {
			t.Errorf("row %d: path %q", i, p)
		}
	}
	b, err := os.ReadFile(plot)
	if err != nil || !strings.Contains(string(b), "64x4KiB") {
		t.Fatalf("plot: %v, %d bytes", err, len(b))
	}
}

func TestBenchPatternTable(t *testing.T) {
	useTestTarget(t)
	out, err := runBenchPattern(t, "--blocks", "16", "--block-size", "8KiB", "--iterations", "1", "--ucx-error-mode", "peer")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"ours", "one-sided", "raw", "memcpy", "limit", "16x8KiB", "mismatches"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// A destination that differs from the pattern is exit status 2.
func TestBenchPatternMismatchExit2(t *testing.T) {
	useTestTarget(t, envPatternTargetWrongSeed+"=1")
	out, err := runBenchPattern(t, "--patterns", "8x4KiB", "--iterations", "1", "--json")
	if exitCode(err) != 2 || !strings.Contains(err.Error(), "differ") {
		t.Fatalf("err %v (exit %d)\n%s", err, exitCode(err), out)
	}
	if !strings.Contains(out, `"byte_mismatches": `) || strings.Contains(out, `"byte_mismatches": 0`) {
		t.Fatalf("no mismatches reported:\n%s", out)
	}
}

func TestBenchPatternFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--patterns", "64"},
		{"--patterns", "0x4KiB"},
		{"--patterns", "4x0"},
		{"--patterns", "4x3TiB"},
		{"--patterns", "4x4KiB", "--blocks", "3"},
		{"--iterations", "0"},
		{"--ucx-error-mode", "bogus"},
		{"--plot", "x.gif"},
		{"extra-arg"},
	} {
		if _, err := runBenchPattern(t, args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func TestParsePatterns(t *testing.T) {
	got, err := parsePatterns(defaultPatterns + ", 7x5000,2x1GiB,1x3k")
	if err != nil {
		t.Fatal(err)
	}
	want := []patternShape{{4096, 64 << 10}, {16384, 16 << 10}, {256, 2 << 20}, {7, 5000}, {2, 1 << 30}, {1, 3 << 10}}
	if len(got) != len(want) {
		t.Fatalf("%v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pattern %d: %v, want %v", i, got[i], want[i])
		}
	}
	if s := (patternShape{4096, 64 << 10}).String(); s != "4096x64KiB" {
		t.Fatal(s)
	}
	if s := (patternShape{3, 5000}).String(); s != "3x5000B" {
		t.Fatal(s)
	}
}

func TestPatternMismatchCount(t *testing.T) {
	const bs = 13 // odd: blocks start at every alignment
	perm := []int{2, 0, 3, 1}
	src := make([]byte, 4*bs)
	fillPattern(src, 0, 9)
	dst := make([]byte, 4*bs)
	for i, p := range perm {
		copy(dst[i*bs:(i+1)*bs], src[p*bs:(p+1)*bs])
	}
	if n := countMismatches(dst, perm, bs, 9); n != 0 {
		t.Fatalf("%d mismatches on a correct copy", n)
	}
	// Piecewise fills agree with one fill.
	part := make([]byte, 4*bs)
	for i := 0; i < 4; i++ {
		fillPattern(part[i*bs:(i+1)*bs], uint64(i*bs), 9)
	}
	if !bytes.Equal(part, src) {
		t.Fatal("fillPattern at an offset differs from one fill")
	}
	dst[5] ^= 1
	dst[40] ^= 0xff
	if n := countMismatches(dst, perm, bs, 9); n != 2 {
		t.Fatalf("%d mismatches, want 2", n)
	}
	if n := countMismatches(dst, perm, bs, 8); n == 0 {
		t.Fatal("another seed matched")
	}
}
