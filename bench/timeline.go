package bench

import (
	"fmt"
	"math"
	"time"

	"tally/internal/plot"
)

// TimelineRow is one second of the run: the requests that ended in it.
// Latencies are of requests, in milliseconds, as in LatencyRow.
type TimelineRow struct {
	Second          int     `json:"second"`  // its start, in seconds since the load began
	Seconds         float64 `json:"seconds"` // its length: 1, but the last may differ
	Requests        int64   `json:"requests"`
	Transfers       int64   `json:"transfers"`
	TransfersPerSec float64 `json:"transfers_per_sec"`
	Failed          int64   `json:"failed_requests"`
	P50             float64 `json:"p50_ms"`
	P99             float64 `json:"p99_ms"`
}

// timelineTail is the shortest last second reported on its own. A shorter
// tail (the last answers after the load stopped) joins the second before
// it, lest a few transfers over a few milliseconds plot as a spike.
const timelineTail = 250 * time.Millisecond

// timeline makes one row per second of a run that lasted elapsed, from
// the requests that ended in each second.
func timeline(secs []secondStats, elapsed time.Duration) []TimelineRow {
	n := max(int((elapsed+time.Second-1)/time.Second), len(secs))
	last := n - 1
	merge := last > 0 && elapsed-time.Duration(last)*time.Second < timelineTail
	rows := []TimelineRow{}
	for i := range n {
		hi, length := i+1, min(time.Second, elapsed-time.Duration(i)*time.Second)
		switch {
		case merge && i == last:
			return rows
		case merge && i == last-1:
			hi, length = n, elapsed-time.Duration(i)*time.Second
		}
		rows = append(rows, timelineRowOf(secs, i, hi, length))
	}
	return rows
}

// timelineRowOf sums secs[lo:hi], which last length in all.
func timelineRowOf(secs []secondStats, lo, hi int, length time.Duration) TimelineRow {
	row := TimelineRow{Second: lo, Seconds: length.Seconds()}
	lat := newHist()
	for _, b := range secs[min(lo, len(secs)):min(hi, len(secs))] {
		lat.Merge(b.lat)
		row.Transfers += b.transfers
		row.Failed += b.failed
	}
	row.Requests = lat.TotalCount()
	row.P50, row.P99 = pct(lat, 50), pct(lat, 99)
	if length > 0 {
		row.TransfersPerSec = float64(row.Transfers) / length.Seconds()
	}
	return row
}

// The plot's geometry, in SVG user units: two panels one above the other
// (throughput, then latency) sharing the time axis, legends on the right.
const (
	plotW      = 900
	plotH      = 574
	plotLeft   = 80
	plotWidth  = 640
	panelH     = 190
	plotTop    = 64
	plotGap    = 70
	plotXTicks = 10
	plotYTicks = 5
)

// writePlot writes the run's timeline to path as a self-contained SVG.
func writePlot(path string, rep *Report) error { return renderPlot(rep).WriteFile(path) }

// renderPlot draws the run's timeline.
func renderPlot(rep *Report) *plot.Canvas {
	tl := rep.Timeline
	xs := make([]float64, len(tl))
	tps, failed, p50, p99 := make([]float64, len(tl)), make([]float64, len(tl)), make([]float64, len(tl)), make([]float64, len(tl))
	anyFailed := false
	xmax := max(rep.Seconds, 1)
	for i, r := range tl {
		xs[i] = float64(r.Second) + r.Seconds/2
		xmax = max(xmax, float64(r.Second)+r.Seconds)
		tps[i], p50[i], p99[i] = r.TransfersPerSec, r.P50, r.P99
		if r.Seconds > 0 {
			failed[i] = float64(r.Failed) / r.Seconds
		}
		anyFailed = anyFailed || r.Failed > 0
	}
	xstep := plot.Step(xmax, plotXTicks)
	// Round the axis up to a tick, but not for the few milliseconds the
	// last answers take after the duration: the points sit mid-second.
	xmax = max(math.Ceil(xmax/xstep-0.05), 1) * xstep
	c := plot.New(plotW, plotH, 12)
	c.Text(plotLeft, 22, fmt.Sprintf("tally bench, %.1fs, seed %d", rep.Seconds, rep.Seed), `font-size="14"`, `font-weight="bold"`)
	c.Text(plotLeft, 40, rep.setting())
	top := []plot.Series{{ID: "throughput", Label: "transfers/s", Color: "#1f77b4", X: xs, Y: tps}}
	if rep.Rate > 0 {
		top = append(top, plot.Series{ID: "target", Label: "target", Color: "#7f7f7f", Dashed: true,
			X: []float64{0, xmax}, Y: []float64{rep.Rate, rep.Rate}})
	}
	if anyFailed {
		top = append(top, plot.Series{ID: "failed", Label: "failed requests/s", Color: "#d62728", X: xs, Y: failed})
	}
	drawPanel(c, plotTop, "transfers/s", xmax, xstep, top)
	drawPanel(c, plotTop+panelH+plotGap, "request latency (ms)", xmax, xstep, []plot.Series{
		{ID: "p50", Label: "p50", Color: "#2ca02c", X: xs, Y: p50},
		{ID: "p99", Label: "p99", Color: "#ff7f0e", X: xs, Y: p99},
	})
	c.Text(plotLeft+plotWidth/2, plotTop+2*panelH+plotGap+40, "time since the load began (s)", `text-anchor="middle"`)
	return c
}

// drawPanel draws one panel whose top edge is at top: grid, ticks and
// their labels, frame, the y axis label, the series and their legend.
func drawPanel(c *plot.Canvas, top float64, ylabel string, xmax, xstep float64, series []plot.Series) {
	ymax := 0.0
	for _, s := range series {
		for _, y := range s.Y {
			ymax = max(ymax, y)
		}
	}
	ystep := plot.Step(max(ymax, 1e-9), plotYTicks)
	ymax = max(math.Ceil(ymax/ystep), 1) * ystep
	f := c.Frame(plotLeft, top, plotWidth, panelH, plot.Scale{Max: xmax}, plot.Scale{Max: ymax})
	f.GridY(plot.Ticks(ymax, ystep), func(v float64) string { return plot.TickLabel(v, ystep) }, "#e0e0e0")
	f.TicksX(plot.Ticks(xmax, xstep), func(v float64) string { return plot.TickLabel(v, xstep) }, true)
	f.Box()
	f.LabelY(22, ylabel)
	f.Lines(series)
}
