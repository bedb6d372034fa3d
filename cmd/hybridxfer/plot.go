package main

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// plotSeries is one bar per label of a grouped bar chart.
type plotSeries struct {
	Name   string
	Values []float64
}

// plotBars draws a grouped bar chart to path, SVG or PNG by its extension:
// one group of bars per label, one bar (and colour, and legend entry) per
// series in each group, the Y axis labelled yLabel (GB/s, ms). Every
// series must have one value per label; values that are negative or not
// finite are drawn as 0.
func plotBars(path, title, yLabel string, labels []string, series []plotSeries) error {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg", ".png":
	default:
		return fmt.Errorf("plot %s: unknown image format (want .svg or .png)", path)
	}
	if len(labels) == 0 || len(series) == 0 {
		return fmt.Errorf("plot %s: nothing to draw (%d labels, %d series)", path, len(labels), len(series))
	}
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = yLabel
	// One unit of X per label; the groups fill 0.8 of it. The canvas grows
	// with the bars so that they stay readable.
	n := float64(len(labels))
	width := vg.Points(math.Max(480, 80+n*float64(len(series)+1)*24))
	dataW := float64(width) - 80 // about what the axes and margins leave
	groupW := vg.Points(0.8 * dataW / n)
	w := groupW / vg.Length(len(series))
	top := 0.0
	for i, s := range series {
		if len(s.Values) != len(labels) {
			return fmt.Errorf("plot %s: series %q has %d values for %d labels", path, s.Name, len(s.Values), len(labels))
		}
		vals := make(plotter.Values, len(s.Values))
		for k, v := range s.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				v = 0
			}
			vals[k] = v
			top = math.Max(top, v)
		}
		b, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return fmt.Errorf("plot %s: %w", path, err)
		}
		b.Color = seriesColor(i)
		b.LineStyle.Width = 0
		b.Offset = w*vg.Length(i) - groupW/2 + w/2
		p.Add(b)
		p.Legend.Add(s.Name, b)
	}
	p.Legend.Top = true
	p.NominalX(labels...)
	p.X.Min, p.X.Max = -0.5, n-0.5
	// Headroom above the tallest bar for the legend.
	if top <= 0 {
		top = 1
	}
	p.Y.Min, p.Y.Max = 0, top*(1.15+0.07*float64(len(series)))
	if err := p.Save(width, 4*vg.Inch, path); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return nil
}

// seriesColor is plotutil's palette, distinct for the first seven series.
func seriesColor(i int) color.Color { return plotutil.Color(i) }
