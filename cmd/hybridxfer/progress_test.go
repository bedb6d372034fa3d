package main

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
)

// forceTerminal makes newProgress draw on any writer for the test.
func forceTerminal(t *testing.T, on bool) {
	t.Helper()
	old := progressTerminal
	progressTerminal = func(io.Writer) bool { return on }
	t.Cleanup(func() { progressTerminal = old })
}

func TestProgressQuietOffTerminal(t *testing.T) {
	// The real check: neither a buffer nor a pipe is a terminal.
	var buf bytes.Buffer
	if progressTerminal(&buf) {
		t.Fatal("a bytes.Buffer counts as a terminal")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if progressTerminal(w) {
		t.Fatal("a pipe counts as a terminal")
	}
	p := newProgress(&buf, 10, "quiet")
	if p.bar != nil {
		t.Fatal("newProgress drew a bar off a terminal")
	}
	for range 10 {
		p.Add(1)
	}
	p.Finish()
	if buf.Len() != 0 {
		t.Fatalf("off a terminal the bar wrote %q", buf.String())
	}
}

func TestProgressCIQuiet(t *testing.T) {
	t.Setenv("CI", "true")
	if progressTerminal(os.Stderr) {
		t.Fatal("CI=true draws bars")
	}
}

func TestProgressSingleStepQuiet(t *testing.T) {
	forceTerminal(t, true)
	var buf bytes.Buffer
	p := newProgress(&buf, 1, "one")
	p.Add(1)
	p.Finish()
	if buf.Len() != 0 {
		t.Fatalf("a one-step run drew a bar: %q", buf.String())
	}
}

func TestProgressOnTerminal(t *testing.T) {
	forceTerminal(t, true)
	var buf bytes.Buffer
	const total = 5
	p := newProgress(&buf, total, "steps")
	if p.bar == nil {
		t.Fatal("no bar with the terminal check forced")
	}
	for range total {
		p.Add(1)
	}
	// Reached total by its Adds (Finish would fill it regardless).
	if got := p.bar.State().CurrentNum; got != total {
		t.Fatalf("bar at %d after %d Adds, want %d", got, total, total)
	}
	drawn := buf.String()
	if !strings.Contains(drawn, "steps") || !strings.Contains(drawn, "/5") {
		t.Fatalf("the bar did not draw its description and count on the writer: %q", drawn)
	}
	p.Finish()
	p.Finish() // idempotent
	// Finished means cleared: the line ends blanked, cursor at its start,
	// so that the result printed next starts on a clean line.
	out := buf.String()
	last := out[strings.LastIndexByte(out[:len(out)-1], '\r'):]
	if !strings.HasSuffix(out, "\r") || strings.Trim(last, "\r ") != "" {
		t.Fatalf("the bar's line was not cleared on Finish: ends %q", last)
	}
}

func TestProgressZeroValue(t *testing.T) {
	var p progress // e.g. an unset struct field
	p.Add(1)
	p.Finish()
}
