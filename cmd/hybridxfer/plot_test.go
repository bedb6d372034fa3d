package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPlotBarsSVG(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bars.svg")
	labels := []string{"4096x64KiB", "16384x16KiB", "256x2MiB"}
	series := []plotSeries{
		{Name: "ours", Values: []float64{10, 8, 12}},
		{Name: "raw", Values: []float64{9, 7, 11}},
		{Name: "memcpy", Values: []float64{11, 9, 13}},
	}
	if err := plotBars(path, "bench pattern", "GB/s", labels, series); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if !strings.HasPrefix(s, "<?xml") && !strings.HasPrefix(s, "<svg") {
		t.Fatalf("not an SVG: %.80q", s)
	}
	for _, want := range append(labels, "ours", "raw", "memcpy", "GB/s", "bench pattern") {
		if !strings.Contains(s, want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
}

func TestPlotBarsPNG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bars.PNG")
	if err := plotBars(path, "t", "GB/s", []string{"a"}, []plotSeries{{Name: "x", Values: []float64{1}}}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "\x89PNG") {
		t.Fatalf("not a PNG: %.8q", b)
	}
}

func TestPlotBarsErrors(t *testing.T) {
	dir := t.TempDir()
	one := []plotSeries{{Name: "x", Values: []float64{1}}}
	for _, name := range []string{"bars.gif", "bars", "bars.pdf"} {
		path := filepath.Join(dir, name)
		if err := plotBars(path, "t", "GB/s", []string{"a"}, one); err == nil {
			t.Errorf("%s: no error", name)
		}
		if _, err := os.Stat(path); err == nil {
			t.Errorf("%s: a file was written", name)
		}
	}
	if err := plotBars(filepath.Join(dir, "x.svg"), "t", "GB/s", []string{"a", "b"}, one); err == nil {
		t.Error("a series shorter than the labels: no error")
	}
}
