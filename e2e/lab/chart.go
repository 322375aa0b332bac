package lab

import (
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// chartProfiles are drawn, in this order and colour.
var chartProfiles = []struct {
	name  string
	color color.RGBA
	dash  []vg.Length
}{
	{"plain", color.RGBA{R: 0xc0, G: 0x39, B: 0x2b, A: 0xff}, nil},
	{"resilient", color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, nil},
	{"resilient-a2", color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, []vg.Length{vg.Points(4), vg.Points(3)}},
	{"nodelocal", color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, nil},
}

// LatencyChart draws, for the lookup kind at the given loss, each profile's
// latency distribution as an empirical CDF (share of lookups done by a
// time, log scale), and returns it as SVG.
func (r *Report) LatencyChart(kind string, loss int) ([]byte, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s lookups, %d%% of DNS packets lost", kind, loss)
	p.X.Label.Text = "lookup latency (ms, log scale)"
	p.Y.Label.Text = "share of lookups done"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top, p.Legend.Left = false, false
	p.Add(plotter.NewGrid())
	drawn := 0
	for _, cp := range chartProfiles {
		c := r.cell(cp.name, kind, loss)
		if c == nil || len(c.MS) == 0 {
			continue
		}
		pts := make(plotter.XYs, 0, len(c.MS))
		for i, ms := range c.MS {
			pts = append(pts, plotter.XY{X: math.Max(ms, 0.05), Y: float64(i+1) / float64(len(c.MS))})
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return nil, err
		}
		line.Color, line.Width, line.Dashes = cp.color, vg.Points(1.5), cp.dash
		line.StepStyle = plotter.PostStep
		p.Add(line)
		p.Legend.Add(fmt.Sprintf("%s (p50 %s, p99 %s ms)", cp.name, fmtMS(c.P50), fmtMS(c.P99)), line)
		drawn++
	}
	if drawn == 0 {
		return nil, fmt.Errorf("no %s cells at %d%% loss to draw", kind, loss)
	}
	p.Legend.ThumbnailWidth = vg.Points(24)
	w, err := p.WriterTo(7*vg.Inch, 4*vg.Inch, "svg")
	if err != nil {
		return nil, err
	}
	var b bytesWriter
	if _, err := w.WriteTo(&b); err != nil {
		return nil, err
	}
	return b, nil
}

func (r *Report) cell(profile, kind string, loss int) *Cell {
	for i := range r.Cells {
		if c := &r.Cells[i]; c.Profile == profile && c.Kind == kind && c.Loss == loss {
			return c
		}
	}
	return nil
}

func fmtMS(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

type bytesWriter []byte

func (b *bytesWriter) Write(p []byte) (int, error) {
	*b = append(*b, p...)
	return len(p), nil
}
