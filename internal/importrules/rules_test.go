package importrules

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/hybridxfer/hybridxfer"

// cgoAllowed are the only directories whose files may `import "C"`.
var cgoAllowed = map[string]bool{
	"statexfer/ucx": true,
	"kernels/cuda":  true,
}

// zmqAllowed is the only directory that may import ZeroMQ.
var zmqAllowed = map[string]bool{"statexfer/zmqchan": true}

// pureDirs are the pure, deterministic core: no Prometheus, no wall clock,
// no global math/rand, no cgo, no network.
func isPure(dir string) bool {
	for _, p := range []string{"groups", "hma", "specdec", "proptest", "statexfer/plan"} {
		if dir == p || strings.HasPrefix(dir, p+"/") {
			return true
		}
	}
	return false
}

// Forbidden selector uses in non-test files of the pure core.
var pureForbiddenCalls = map[string][]string{
	"time":      {"Now", "Since", "Until", "Sleep", "After", "Tick", "NewTimer", "NewTicker", "AfterFunc"},
	"math/rand": {"Int", "Intn", "Int63", "Int63n", "Int31", "Int31n", "Float64", "Float32", "Perm", "Shuffle", "Seed", "Uint32", "Uint64", "Read", "ExpFloat64", "NormFloat64"},
	"math/rand/v2": {"Int", "IntN", "N", "Int64", "Int64N", "Int32", "Int32N", "Uint32", "Uint64", "Float64", "Float32",
		"Perm", "Shuffle", "UintN", "Uint32N", "Uint64N", "ExpFloat64", "NormFloat64"},
}

var pureForbiddenImports = []string{"github.com/prometheus/", "net", "net/http", "os/exec", "github.com/pebbe/zmq4", "C"}

func repoRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}

type violation struct{ file, msg string }

// check applies the rules to one parsed file in dir (slash-separated,
// relative to the module root).
func check(dir, file string, f *ast.File) []violation {
	var out []violation
	isTest := strings.HasSuffix(file, "_test.go")
	names := map[string]string{} // local name -> import path
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		local := p[strings.LastIndex(p, "/")+1:]
		if p == "math/rand/v2" {
			local = "rand"
		}
		if imp.Name != nil {
			local = imp.Name.Name
		}
		names[local] = p
		if p == "C" && !cgoAllowed[dir] {
			out = append(out, violation{file, `import "C" outside statexfer/ucx and kernels/cuda`})
		}
		if strings.HasPrefix(p, "github.com/pebbe/zmq4") && !zmqAllowed[dir] {
			out = append(out, violation{file, "ZeroMQ imported outside statexfer/zmqchan"})
		}
		if isPure(dir) && !isTest {
			for _, bad := range pureForbiddenImports {
				if p == bad || (strings.HasSuffix(bad, "/") && strings.HasPrefix(p, bad)) {
					out = append(out, violation{file, "pure core imports " + p})
				}
			}
		}
	}
	if !isPure(dir) || isTest {
		return out
	}
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		id, ok := sel.X.(*ast.Ident)
		if !ok {
			return true
		}
		path, ok := names[id.Name]
		if !ok {
			return true
		}
		for _, fn := range pureForbiddenCalls[path] {
			if sel.Sel.Name == fn {
				out = append(out, violation{file, "pure core uses " + path + "." + fn})
			}
		}
		return true
	})
	return out
}

func TestImportRules(t *testing.T) {
	root := repoRoot(t)
	fset := token.NewFileSet()
	files := 0
	graph := map[string]map[string]bool{} // package dir -> module packages its non-test files import
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n == "testdata" || strings.HasPrefix(n, ".") || n == "bin" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly|parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		if f, err = parser.ParseFile(fset, path, nil, parser.SkipObjectResolution); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		for _, v := range check(filepath.ToSlash(rel), filepath.Base(path), f) {
			t.Errorf("%s/%s: %s", rel, v.file, v.msg)
		}
		if !strings.HasSuffix(path, "_test.go") {
			dir := filepath.ToSlash(rel)
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if p == "net/http" {
					if graph[dir] == nil {
						graph[dir] = map[string]bool{}
					}
					graph[dir][p] = true
				}
				if dep, ok := strings.CutPrefix(p, module+"/"); ok {
					if graph[dir] == nil {
						graph[dir] = map[string]bool{}
					}
					graph[dir][dep] = true
				}
			}
		}
		files++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 10 {
		t.Fatalf("only %d Go files found under %s", files, root)
	}
	for _, v := range checkGraph(graph) {
		t.Error(v)
	}
}

// layers is the package graph of DESIGN section 10: the module packages
// each package may import (non-test files; a trailing "/" allows a tree).
// A package missing here is an error, so every new package is placed.
var layers = map[string][]string{
	"groups":                            {},
	"specdec":                           {"groups"},
	"hma":                               {"groups", "specdec"},
	"kernels":                           {},
	"kernels/cuda":                      {"kernels"},
	"kernels/nvml":                      {},
	"kernels/kerneltest":                {"kernels"},
	"internal/baseline":                 {"kernels"},
	"internal/hostmem":                  {},
	"internal/importrules":              {},
	"internal/ratelog":                  {},
	"oracle":                            {"groups"},
	"oracle/refmodel":                   {"groups", "oracle", "specdec", "statexfer/plan"},
	"tokenizer":                         {"oracle/refmodel"},
	"statexfer/transport":               {},
	"statexfer/transport/transporttest": {"statexfer/transport"},
	"statexfer/grant":                   {},
	"statexfer/plan":                    {"groups", "kernels"},
	"statexfer":                         {"groups", "kernels", "statexfer/plan", "statexfer/transport"},
	"statexfer/session":                 {"groups", "hma", "specdec", "kernels", "internal/", "statexfer", "statexfer/plan", "statexfer/transport"},
	"statexfer/ucx":                     {"kernels", "statexfer/transport"},
	"statexfer/zmqchan":                 {"internal/ratelog"},
	// verify: the pattern check over the session, and the model check
	// (model.go) over two engines; grant for the token chain's block
	// (what a conversation export covers, ExportCovers).
	"statexfer/verify": {"groups", "kernels", "oracle", "oracle/", "statexfer", "statexfer/grant", "statexfer/plan", "statexfer/session", "statexfer/transport",
		"backend", "hma", "engine", "tokenizer"},
	// backend is the contract between the API and the engine: no HTTP.
	"backend": {},
	// engine is the engine driver over the session: a library (no HTTP
	// server: openai serves it), never the cgo/zmq edges (cmd wires them).
	"engine": {"backend", "groups", "hma", "specdec", "kernels", "internal/", "oracle/", "tokenizer", "statexfer", "statexfer/plan",
		"statexfer/session", "statexfer/transport", "statexfer/grant"},
	// openai is the OpenAI-compatible HTTP API over any backend.
	"openai":            {"backend", "internal/"},
	"openai/openaitest": {"backend", "openai", "tokenizer"},
	// proxy routes the API over prefill and decode instances.
	"proxy": {"backend", "openai", "internal/"},
	// discovery is the etcd edge (registration, watch, an embedded server
	// for demos and tests): nothing of ours; cmd wires it to engine and
	// proxy.
	"discovery": {},
	// proptest is a library others run in their CI: libraries only, no
	// HTTP server, no cgo.
	"proptest":       {"backend", "groups", "hma", "specdec", "oracle/", "tokenizer", "engine", "statexfer/plan", "statexfer/transport", "statexfer/verify"},
	"cmd/hybridxfer": {"/"},
}

// noHTTP are the packages that must not import net/http: the contract,
// the engine and the property suite are libraries, not servers.
var noHTTP = []string{"backend", "engine", "proptest", "groups", "hma", "specdec", "statexfer/plan", "statexfer/session"}

func allowed(dep string, rules []string) bool {
	for _, r := range rules {
		if r == "/" || dep == r || (strings.HasSuffix(r, "/") && strings.HasPrefix(dep, r)) {
			return true
		}
	}
	return false
}

// checkGraph applies layers to a package graph.
func checkGraph(graph map[string]map[string]bool) []string {
	var out []string
	for dir, deps := range graph {
		rules, ok := layers[dir]
		if !ok {
			out = append(out, fmt.Sprintf("package %s is not in the layers table (internal/importrules): place it", dir))
			continue
		}
		for dep := range deps {
			if dep == "net/http" {
				if slices.Contains(noHTTP, dir) {
					out = append(out, fmt.Sprintf("%s imports net/http: it must stay a library, not a server", dir))
				}
				continue
			}
			if !allowed(dep, rules) {
				out = append(out, fmt.Sprintf("%s imports %s, which DESIGN section 10's layers do not allow (allowed: %v)", dir, dep, rules))
			}
		}
	}
	sort.Strings(out)
	return out
}

// The graph check refuses an edge the layers forbid, net/http in a
// library and an unplaced package.
func TestImportGraphCatchesViolations(t *testing.T) {
	for _, c := range []struct {
		graph map[string]map[string]bool
		want  string
	}{
		{map[string]map[string]bool{"kernels": {"groups": true}}, "kernels imports groups"},
		{map[string]map[string]bool{"proptest": {"engine": true, "statexfer/ucx": true}}, "proptest imports statexfer/ucx"},
		{map[string]map[string]bool{"newpkg": {}}, "newpkg is not in the layers table"},
		{map[string]map[string]bool{"engine": {"net/http": true}}, "engine imports net/http"},
		{map[string]map[string]bool{"proptest": {"openai": true}}, "proptest imports openai"},
		{map[string]map[string]bool{"engine": {"openai": true}}, "engine imports openai"},
		{map[string]map[string]bool{"engine": {"cmd/hybridxfer": true}}, "engine imports cmd/hybridxfer"},
	} {
		got := strings.Join(checkGraph(c.graph), "\n")
		if !strings.Contains(got, c.want) {
			t.Errorf("graph %v: got %q, want an error containing %q", c.graph, got, c.want)
		}
	}
	if v := checkGraph(map[string]map[string]bool{"hma": {"groups": true, "specdec": true}}); len(v) != 0 {
		t.Errorf("an allowed graph refused: %v", v)
	}
}

// The checker itself must catch each kind of violation.
func TestImportRulesCatchViolations(t *testing.T) {
	cases := []struct {
		dir, src string
		want     string
	}{
		{"hma", "package hma\nimport \"C\"\n", `import "C"`},
		{"statexfer", "package statexfer\nimport _ \"github.com/pebbe/zmq4\"\n", "ZeroMQ"},
		{"groups", "package groups\nimport \"time\"\nfunc f() { _ = time.Now() }\n", "time.Now"},
		{"hma", "package hma\nimport r \"math/rand\"\nfunc f() { _ = r.Intn(3) }\n", "math/rand.Intn"},
		{"proptest", "package proptest\nimport \"math/rand/v2\"\nfunc f() { _ = rand.IntN(3) }\n", "math/rand/v2.IntN"},
		{"specdec", "package specdec\nimport _ \"github.com/prometheus/client_golang/prometheus\"\n", "prometheus"},
		{"statexfer/plan", "package plan\nimport \"time\"\nfunc f() { time.Sleep(1) }\n", "time.Sleep"},
	}
	for _, c := range cases {
		f, err := parser.ParseFile(token.NewFileSet(), "x.go", c.src, 0)
		if err != nil {
			t.Fatal(err)
		}
		vs := check(c.dir, "x.go", f)
		found := false
		for _, v := range vs {
			found = found || strings.Contains(v.msg, c.want)
		}
		if !found {
			t.Errorf("%s: %q not flagged (got %v)", c.dir, c.want, vs)
		}
	}
	// Allowed: cgo in ucx, zmq in zmqchan, time.Duration in the core, rand.New with a seed.
	ok := []struct{ dir, src string }{
		{"statexfer/ucx", "package ucx\nimport \"C\"\n"},
		{"statexfer/zmqchan", "package zmqchan\nimport _ \"github.com/pebbe/zmq4\"\n"},
		{"hma", "package hma\nimport \"time\"\nvar d time.Duration\n"},
		{"proptest", "package proptest\nimport \"math/rand\"\nvar r = rand.New(rand.NewSource(1))\n"},
	}
	for _, c := range ok {
		f, _ := parser.ParseFile(token.NewFileSet(), "x.go", c.src, 0)
		if vs := check(c.dir, "x.go", f); len(vs) != 0 {
			t.Errorf("%s: false positive %v", c.dir, vs)
		}
	}
}
