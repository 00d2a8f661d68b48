package bench

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"os"
	"strings"
	"time"
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

// plotSeries is one line of a panel.
type plotSeries struct {
	id, label, color string
	dashed           bool
	xs, ys           []float64
}

// writePlot writes the run's timeline to path as a self-contained SVG.
func writePlot(path string, rep *Report) error {
	var b bytes.Buffer
	renderPlot(&b, rep)
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write the plot: %w", err)
	}
	return nil
}

func renderPlot(b *bytes.Buffer, rep *Report) {
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
	xstep := niceStep(xmax, plotXTicks)
	// Round the axis up to a tick, but not for the few milliseconds the
	// last answers take after the duration: the points sit mid-second.
	xmax = max(math.Ceil(xmax/xstep-0.05), 1) * xstep
	fmt.Fprintf(b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"+
		"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n",
		plotW, plotH, plotW, plotH)
	fmt.Fprintf(b, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", plotW, plotH)
	fmt.Fprintf(b, "<text x=\"%d\" y=\"22\" font-size=\"14\" font-weight=\"bold\">tally bench, %.1fs, seed %d</text>\n",
		plotLeft, rep.Seconds, rep.Seed)
	fmt.Fprintf(b, "<text x=\"%d\" y=\"40\">%s</text>\n", plotLeft, html.EscapeString(rep.setting()))
	top := []plotSeries{{id: "throughput", label: "transfers/s", color: "#1f77b4", xs: xs, ys: tps}}
	if rep.Rate > 0 {
		top = append(top, plotSeries{id: "target", label: "target", color: "#7f7f7f", dashed: true,
			xs: []float64{0, xmax}, ys: []float64{rep.Rate, rep.Rate}})
	}
	if anyFailed {
		top = append(top, plotSeries{id: "failed", label: "failed requests/s", color: "#d62728", xs: xs, ys: failed})
	}
	drawPanel(b, plotTop, "transfers/s", xmax, xstep, top)
	drawPanel(b, plotTop+panelH+plotGap, "request latency (ms)", xmax, xstep, []plotSeries{
		{id: "p50", label: "p50", color: "#2ca02c", xs: xs, ys: p50},
		{id: "p99", label: "p99", color: "#ff7f0e", xs: xs, ys: p99},
	})
	fmt.Fprintf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">time since the load began (s)</text>\n",
		plotLeft+plotWidth/2, plotTop+2*panelH+plotGap+40)
	b.WriteString("</svg>\n")
}

// drawPanel draws one panel whose top edge is at top: frame, grid, ticks
// and their labels, the y axis label, the series and their legend.
func drawPanel(b *bytes.Buffer, top int, ylabel string, xmax, xstep float64, series []plotSeries) {
	ymax := 0.0
	for _, s := range series {
		for _, y := range s.ys {
			ymax = max(ymax, y)
		}
	}
	ystep := niceStep(max(ymax, 1e-9), plotYTicks)
	ymax = max(math.Ceil(ymax/ystep), 1) * ystep
	sx := func(x float64) float64 { return plotLeft + x/xmax*plotWidth }
	sy := func(y float64) float64 { return float64(top) + panelH - y/ymax*panelH }
	bottom := top + panelH
	for v := 0.0; v <= ymax+ystep/2; v += ystep {
		fmt.Fprintf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e0e0e0\"/>\n", plotLeft, plotLeft+plotWidth, sy(v), sy(v))
		fmt.Fprintf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", plotLeft-6, sy(v)+4, tickLabel(v, ystep))
	}
	for v := 0.0; v <= xmax+xstep/2; v += xstep {
		fmt.Fprintf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", sx(v), sx(v), bottom, bottom+4)
		fmt.Fprintf(b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", sx(v), bottom+17, tickLabel(v, xstep))
	}
	fmt.Fprintf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"black\"/>\n", plotLeft, top, plotWidth, panelH)
	fmt.Fprintf(b, "<text transform=\"translate(22 %d) rotate(-90)\" text-anchor=\"middle\">%s</text>\n", top+panelH/2, html.EscapeString(ylabel))
	for i, s := range series {
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		pts := make([]string, len(s.xs))
		for j := range s.xs {
			pts[j] = fmt.Sprintf("%.1f,%.1f", sx(s.xs[j]), sy(s.ys[j]))
		}
		fmt.Fprintf(b, "<polyline id=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"%s\"/>\n",
			s.id, s.color, dash, strings.Join(pts, " "))
		ly := top + 14 + 20*i
		fmt.Fprintf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"%s/>\n",
			plotLeft+plotWidth+15, plotLeft+plotWidth+40, ly, ly, s.color, dash)
		fmt.Fprintf(b, "<text x=\"%d\" y=\"%d\">%s</text>\n", plotLeft+plotWidth+46, ly+4, html.EscapeString(s.label))
	}
}

// niceStep is a step of 1, 2 or 5 times a power of ten that cuts [0, v]
// into about n ticks.
func niceStep(v float64, n int) float64 {
	raw := v / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5} {
		if raw <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

// tickLabel prints v with as many decimals as step needs.
func tickLabel(v, step float64) string {
	return fmt.Sprintf("%.*f", max(0, int(-math.Floor(math.Log10(step)))), v)
}
