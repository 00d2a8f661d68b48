package harness

import (
	"bufio"
	"fmt"
	"html"
	"math"
	"os"
	"time"

	"tally/test/jepsen/check"
	"tally/test/jepsen/history"
)

// plotLatency draws every operation's latency against the time it was
// invoked, log scale, one colour per outcome, with the fault windows
// shaded and labelled: an SVG written by hand, no plotting library.
func plotLatency(path string, a *check.Analysis, ws []*Window, start time.Time) error {
	const (
		W, H         = 1400.0, 600.0
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
	x := func(s float64) float64 { return left + (W-left-right)*s/end }
	y := func(ms float64) float64 {
		ms = math.Min(math.Max(ms, minMs), maxMs)
		f := (math.Log10(ms) - math.Log10(minMs)) / (math.Log10(maxMs) - math.Log10(minMs))
		return H - bottom - (H-top-bottom)*f
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b := bufio.NewWriter(f)
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", W, H)
	fmt.Fprintf(b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	for _, w := range ws {
		s, e := w.Start.Sub(start).Seconds(), w.Healed.Sub(start).Seconds()
		fill := "#fde2c8"
		if !w.Verified {
			fill = "#f4b6b6"
		}
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s" opacity="0.7"><title>%s</title></rect>`+"\n",
			x(s), top, math.Max(x(e)-x(s), 1), H-top-bottom, fill, html.EscapeString(w.Fault.Class+" "+w.Target+": "+w.Verify))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" transform="rotate(90 %.1f %.1f)" fill="#7a4a1a" font-size="10">%s</text>`+"\n",
			x(s)+3, top+4, x(s)+3, top+4, html.EscapeString(fmt.Sprintf("%d %s %s", w.N, w.Fault.Class, w.Target)))
	}
	// Axes and grid.
	for ms := minMs * 2; ms <= maxMs; ms *= 10 {
		fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%.1f" y="%.1f" text-anchor="end">%gms</text>`+"\n",
			left, W-right, y(ms), y(ms), left-4, y(ms)+4, ms)
	}
	step := math.Max(1, math.Round(end/20))
	for s := 0.0; s <= end; s += step {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%.0fs</text>`+"\n", x(s), H-bottom+16, s)
	}
	fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, W-right, H-bottom, H-bottom)
	fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, left, top, H-bottom)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">time since start (invoke)</text>`+"\n", (W+left)/2, H-12)
	fmt.Fprintf(b, `<text x="14" y="%.1f" transform="rotate(-90 14 %.1f)" text-anchor="middle">latency</text>`+"\n", (H)/2, H/2)
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
		s := float64(p.Start()) / 1e9
		ms := float64(p.End()-p.Start()) / 1e6
		r := 1.2
		if history.IsWrite(p.Invoke.F) {
			r = 1.8
		}
		fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="%.1f" fill="%s" fill-opacity="0.6"/>`+"\n", x(s), y(ms), r, colour[p.Type()])
	}
	lx := W - right - 260
	for i, t := range []history.Type{history.OK, history.Fail, history.Info} {
		fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/><text x="%.1f" y="%.1f">%s</text>`+"\n",
			lx+float64(i)*80, 14.0, colour[t], lx+float64(i)*80+8, 18.0, t)
	}
	fmt.Fprintf(b, `<text x="%.1f" y="18">shaded: fault windows (red: not verified)</text>`+"\n", left)
	b.WriteString("</svg>\n")
	return b.Flush()
}
