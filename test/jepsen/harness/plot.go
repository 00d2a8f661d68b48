package harness

import (
	"fmt"
	"math"
	"time"

	"tally/internal/plot"
	"tally/test/jepsen/check"
	"tally/test/jepsen/history"
)

// plotLatency draws every operation's latency against the time it was
// invoked, log scale, one colour per outcome, with the fault windows
// shaded and labelled.
func plotLatency(path string, a *check.Analysis, ws []*Window, start time.Time) error {
	const (
		W, H         = 1400, 600
		left, right  = 70.0, 20.0
		top, bottom  = 30.0, 50.0
		minMs, maxMs = 0.5, 20000.0
		maxPoints    = 40000
	)
	var end float64
	for i := range a.Pairs {
		end = math.Max(end, float64(a.Pairs[i].End())/1e9)
	}
	end = math.Max(end, 1)
	c := plot.New(W, H, 11)
	f := c.Frame(left, top, W-left-right, H-top-bottom, plot.Scale{Max: end}, plot.Scale{Min: minMs, Max: maxMs, Log: true})
	for _, w := range ws {
		s, e := w.Start.Sub(start).Seconds(), w.Healed.Sub(start).Seconds()
		fill := "#fde2c8"
		if !w.Verified {
			fill = "#f4b6b6"
		}
		f.Span(s, e, fill, w.Fault.Class+" "+w.Target+": "+w.Verify)
		c.TextRotated(f.PX(s)+3, top+4, 90, fmt.Sprintf("%d %s %s", w.N, w.Fault.Class, w.Target), `fill="#7a4a1a"`, `font-size="10"`)
	}
	var grid []float64
	for ms := minMs * 2; ms <= maxMs; ms *= 10 {
		grid = append(grid, ms)
	}
	f.GridY(grid, func(ms float64) string { return fmt.Sprintf("%gms", ms) }, "#ddd")
	f.TicksX(plot.Ticks(end, math.Max(1, math.Round(end/20))), func(s float64) string { return fmt.Sprintf("%.0fs", s) }, false)
	f.Axes()
	c.Text((W+left)/2, H-12, "time since start (invoke)", `text-anchor="middle"`)
	f.LabelY(14, "latency")
	colour := map[history.Type]string{history.OK: "#2a9d3a", history.Fail: "#e08a00", history.Info: "#d11"}
	every := 1
	if len(a.Pairs) > maxPoints {
		every = len(a.Pairs)/maxPoints + 1
	}
	for i := range a.Pairs {
		p := &a.Pairs[i]
		if i%every != 0 && p.Type() == history.OK {
			continue
		}
		r := 1.2
		if history.IsWrite(p.Invoke.F) {
			r = 1.8
		}
		f.Dot(float64(p.Start())/1e9, float64(p.End()-p.Start())/1e6, r, colour[p.Type()], 0.6)
	}
	lx := W - right - 260
	for i, t := range []history.Type{history.OK, history.Fail, history.Info} {
		c.Circle(lx+float64(i)*80, 14, 4, colour[t], 1)
		c.Text(lx+float64(i)*80+8, 18, string(t))
	}
	c.Text(left, 18, "shaded: fault windows (red: not verified)")
	return c.WriteFile(path)
}
