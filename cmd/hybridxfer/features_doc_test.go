package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// docs/features.md is the feature matrix: its tables name, per feature,
// the Go tests that prove it ("Go tests" column, `pkg/path.TestName`
// spans) and a command that shows it ("Command" column: `hybridxfer ...`
// spans the test runs, or `go test ./pkg -run TestName ...` spans whose
// package and test it checks). The "Refused command" column holds
// commands that must fail with the text of the "Error contains" column.

const featuresDocPath = "docs/features.md"

// featuresDoc is what the tables of docs/features.md name.
type featuresDoc struct {
	commands []docCommand // Command column, `hybridxfer ...`
	goTests  []docCommand // Command column, `go test ...`
	refused  []docRefusal
	tests    []docTestRef
}

type docCommand struct {
	line int
	text string
}

type docRefusal struct {
	docCommand
	want string
}

type docTestRef struct {
	line int
	pkg  string // directory relative to the repository root
	name string
}

var (
	docSpanRe    = regexp.MustCompile("`([^`]*)`")
	docTestRefRe = regexp.MustCompile(`^([a-z0-9_]+(?:/[a-z0-9_.-]+)*)\.(Test[A-Za-z0-9_]+)$`)
	docGoTestRe  = regexp.MustCompile(`^go test \./([a-z0-9_/.-]+) -run (Test[A-Za-z0-9_]+)(?: -count=1)?$`)
	// A command is copied into a shell as it is: nothing a shell would
	// expand or split differently from strings.Fields.
	docShellRe = regexp.MustCompile("[\"'$*?;&<>|\\\\(){}\\[\\]~#]")
)

// splitTableRow splits a Markdown table row into its cells; a | inside a
// code span does not split.
func splitTableRow(row string) []string {
	row = strings.TrimSpace(row)
	row = strings.TrimPrefix(row, "|")
	row = strings.TrimSuffix(row, "|")
	var cells []string
	var cur strings.Builder
	inCode := false
	for _, r := range row {
		switch {
		case r == '`':
			inCode = !inCode
		case r == '|' && !inCode:
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
			continue
		}
		cur.WriteRune(r)
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

func isSeparatorRow(cells []string) bool {
	for _, c := range cells {
		if strings.Trim(c, "-: ") != "" {
			return false
		}
	}
	return true
}

// parseFeaturesDoc reads the tables of the feature matrix. Every code span
// in a Command, Refused command or Go tests cell must be of its column's
// form: anything else is an error, so a mangled row cannot drop out
// unchecked.
func parseFeaturesDoc(text string) (*featuresDoc, error) {
	doc := &featuresDoc{}
	var errs []string
	bad := func(line int, format string, args ...any) {
		errs = append(errs, fmt.Sprintf("%s:%d: %s", featuresDocPath, line, fmt.Sprintf(format, args...)))
	}
	var header []string
	for i, l := range strings.Split(text, "\n") {
		line := i + 1
		if !strings.HasPrefix(strings.TrimSpace(l), "|") {
			header = nil
			continue
		}
		cells := splitTableRow(l)
		if header == nil {
			header = cells
			continue
		}
		if isSeparatorRow(cells) {
			continue
		}
		if len(cells) != len(header) {
			bad(line, "%d cells, the table's header has %d", len(cells), len(header))
			continue
		}
		var refused, want []string
		for c, h := range header {
			spans := docSpanRe.FindAllStringSubmatch(cells[c], -1)
			switch h {
			case "Command":
				for _, s := range spans {
					switch cmd := s[1]; {
					case strings.HasPrefix(cmd, "hybridxfer "):
						if docShellRe.MatchString(cmd) {
							bad(line, "command %q: no quotes or shell characters, please", cmd)
						}
						doc.commands = append(doc.commands, docCommand{line, cmd})
					case strings.HasPrefix(cmd, "go test "):
						if !docGoTestRe.MatchString(cmd) {
							bad(line, "%q: want `go test ./PKG -run TestName [-count=1]`", cmd)
						}
						doc.goTests = append(doc.goTests, docCommand{line, cmd})
					default:
						bad(line, "Command column: %q is neither `hybridxfer ...` nor `go test ...`", cmd)
					}
				}
			case "Refused command":
				for _, s := range spans {
					if !strings.HasPrefix(s[1], "hybridxfer ") || docShellRe.MatchString(s[1]) {
						bad(line, "refused command %q: want a plain `hybridxfer ...`", s[1])
					}
					refused = append(refused, s[1])
				}
			case "Error contains":
				for _, s := range spans {
					want = append(want, s[1])
				}
			case "Go tests":
				for _, s := range spans {
					m := docTestRefRe.FindStringSubmatch(s[1])
					if m == nil {
						bad(line, "Go tests column: %q is not `pkg/path.TestName`", s[1])
						continue
					}
					doc.tests = append(doc.tests, docTestRef{line, m[1], m[2]})
				}
			}
		}
		switch {
		case len(refused) == 0 && len(want) == 0:
		case len(refused) == 1 && len(want) == 1:
			doc.refused = append(doc.refused, docRefusal{docCommand{line, refused[0]}, want[0]})
		default:
			bad(line, "a refused row needs one command and one error text, has %d and %d", len(refused), len(want))
		}
	}
	if len(errs) > 0 {
		return doc, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return doc, nil
}

// repoRoot is the module root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

func loadFeaturesDoc(t *testing.T) (*featuresDoc, string) {
	t.Helper()
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, featuresDocPath))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := parseFeaturesDoc(string(b))
	if err != nil {
		t.Fatal(err)
	}
	// The matrix is large; a parser that finds little has lost rows.
	if len(doc.commands) < 60 || len(doc.tests) < 60 || len(doc.refused) < 5 || len(doc.goTests) < 2 {
		t.Fatalf("%s: %d commands, %d test references, %d refusals, %d go test commands: the tables were not read",
			featuresDocPath, len(doc.commands), len(doc.tests), len(doc.refused), len(doc.goTests))
	}
	return doc, root
}

// testFuncs caches, per package directory, the test functions its
// _test.go files declare.
type testFuncs map[string]map[string]bool

var testFuncRe = regexp.MustCompile(`(?m)^func (Test[A-Za-z0-9_]*)\(`)

func (tf testFuncs) has(root, pkg, name string) (bool, error) {
	funcs, ok := tf[pkg]
	if !ok {
		files, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(pkg), "*_test.go"))
		if err != nil {
			return false, err
		}
		if len(files) == 0 {
			return false, fmt.Errorf("package %s: no _test.go files (no such package?)", pkg)
		}
		funcs = map[string]bool{}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return false, err
			}
			for _, m := range testFuncRe.FindAllSubmatch(b, -1) {
				funcs[string(m[1])] = true
			}
		}
		tf[pkg] = funcs
	}
	return funcs[name], nil
}

// Every Go test the matrix names exists where it says, and so does every
// `go test ./PKG -run NAME` of its Command columns.
func TestFeaturesDocNamesRealTests(t *testing.T) {
	doc, root := loadFeaturesDoc(t)
	tf := testFuncs{}
	check := func(line int, pkg, name string) {
		ok, err := tf.has(root, pkg, name)
		switch {
		case err != nil:
			t.Errorf("%s:%d: %s.%s: %v", featuresDocPath, line, pkg, name, err)
		case !ok:
			t.Errorf("%s:%d: no func %s( in %s/*_test.go", featuresDocPath, line, name, pkg)
		}
	}
	for _, r := range doc.tests {
		check(r.line, r.pkg, r.name)
	}
	for _, c := range doc.goTests {
		m := docGoTestRe.FindStringSubmatch(c.text)
		check(c.line, m[1], m[2])
	}
}

// The parser itself: rows it cannot read are errors, not skipped.
func TestFeaturesDocParser(t *testing.T) {
	good := "| Feature | Go tests | Command |\n|---|---|---|\n" +
		"| x | `engine.TestA` `statexfer/verify.TestB` | `hybridxfer verify --model m`<br>`go test ./engine -run TestA -count=1` |\n\n" +
		"| Feature | Go tests | Refused command | Error contains |\n|---|---|---|---|\n" +
		"| y | — | `hybridxfer verify --prefill-tp 3` | `impossible` |\n"
	doc, err := parseFeaturesDoc(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(doc.commands) != 1 || doc.commands[0].text != "hybridxfer verify --model m" || len(doc.goTests) != 1 ||
		len(doc.tests) != 2 || doc.tests[1] != (docTestRef{3, "statexfer/verify", "TestB"}) ||
		len(doc.refused) != 1 || doc.refused[0].want != "impossible" {
		t.Fatalf("parsed %+v", doc)
	}
	for _, row := range []string{
		"| x | `engine.TestA` | `verify --model m` |",              // not a hybridxfer command
		"| x | `TestA` | `hybridxfer verify` |",                    // test without its package
		"| x | `engine.TestA` | `hybridxfer verify --model 'm'` |", // shell quoting
		"| x | `engine.TestA` | `go test ./engine` |",              // go test without -run
		"| x | `engine.TestA` |",                                   // a cell missing
	} {
		if _, err := parseFeaturesDoc("| Feature | Go tests | Command |\n|---|---|---|\n" + row + "\n"); err == nil {
			t.Errorf("%s: parsed without an error", row)
		}
	}
}

// Every command of the matrix runs and exits 0; every refused command
// exits non-zero with its error text. Commands run from the repository
// root (model files are given relative to it) with the built CLI.
func TestFeaturesDocCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every command of docs/features.md")
	}
	doc, root := loadFeaturesDoc(t)
	bin := buildCLI(t)
	run := func(t *testing.T, text string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // a hang guard
		defer cancel()
		args := strings.Fields(text)[1:]
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = root
		cmd.Env = append(workerEnv(), "CI=true") // no progress bars
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		err := cmd.Run()
		t.Logf("%.2fs", time.Since(start).Seconds())
		if ctx.Err() != nil {
			err = fmt.Errorf("%v (timed out)", err)
		}
		return out.String(), err
	}
	seen := map[string]bool{}
	// UCX rows start worker processes of their own: run them one at a
	// time, before the in-process ones run two at once.
	for _, ucx := range []bool{true, false} {
		for _, c := range doc.commands {
			if seen[c.text] || strings.Contains(c.text, "--transport ucx") != ucx {
				continue
			}
			seen[c.text] = true
			t.Run(fmt.Sprintf("line%d", c.line), func(t *testing.T) {
				if !ucx {
					t.Parallel()
				}
				if out, err := run(t, c.text); err != nil {
					t.Errorf("%s:%d: %s: %v\n%s", featuresDocPath, c.line, c.text, err, out)
				}
			})
		}
	}
	for _, r := range doc.refused {
		t.Run(fmt.Sprintf("line%d-refused", r.line), func(t *testing.T) {
			t.Parallel()
			out, err := run(t, r.text)
			if err == nil {
				t.Errorf("%s:%d: %s: exited 0, want a refusal containing %q\n%s", featuresDocPath, r.line, r.text, r.want, out)
			} else if !strings.Contains(out, r.want) {
				t.Errorf("%s:%d: %s: %v, output lacks %q:\n%s", featuresDocPath, r.line, r.text, err, r.want, out)
			}
		})
	}
}
