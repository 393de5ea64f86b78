package bench

import (
	"fmt"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// PlotMemory draws the sampler's series, memory (MiB) over time (s): one line
// for the RSS of each watched process, one for the kernel's TCP memory and one
// for the cgroup's usage, and writes PREFIX.png and PREFIX.svg.
func PlotMemory(s *Sampler, prefix, title string) ([]string, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "seconds"
	p.Y.Label.Text = "MiB"
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	var (
		lines []any
		maxY  float64
	)
	for c := 1; c < len(s.Cols); c++ {
		name := s.Cols[c]
		label := name
		switch {
		case strings.HasSuffix(name, "_pss"):
			continue // RSS is the line; PSS is in the TSV
		case strings.HasSuffix(name, "_rss"):
			label = strings.TrimSuffix(name, "_rss") + " RSS"
		case name == "tcp_mem":
			label = "kernel TCP mem (all sockets)"
		case name == "cgroup":
			label = "cgroup usage"
		}
		pts := make(plotter.XYs, 0, len(s.T))
		for i, t := range s.T {
			v := s.Vals[i][c-1]
			if v < 0 {
				continue
			}
			pts = append(pts, plotter.XY{X: t, Y: float64(v) / (1 << 20)})
		}
		for _, pt := range pts {
			maxY = max(maxY, pt.Y)
		}
		if len(pts) > 0 {
			lines = append(lines, label, pts)
		}
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("nothing to plot")
	}
	if err := plotutil.AddLines(p, lines...); err != nil {
		return nil, err
	}
	p.Y.Max = maxY * 1.25 // room for the legend above the highest line
	var files []string
	for _, ext := range []string{".png", ".svg"} {
		f := prefix + ext
		if err := p.Save(9*vg.Inch, 5*vg.Inch, f); err != nil {
			return files, err
		}
		files = append(files, f)
	}
	return files, nil
}
