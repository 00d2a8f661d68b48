// Package plot writes small self-contained SVG charts: frames with linear
// or logarithmic axes, grid lines and ticks, lines, dots, shaded spans
// and legends. It is what the bench's timeline and the fault suite's
// latency plot need, no more; a plotting library would bring fonts and
// image backends for a few hundred lines of output.
package plot

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"os"
	"strings"
)

// Canvas is one SVG document being drawn. Not safe for concurrent use.
type Canvas struct {
	b bytes.Buffer
}

// New starts a drawing w by h user units on a white background.
func New(w, h, fontSize int) *Canvas {
	c := &Canvas{}
	fmt.Fprintf(&c.b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"+
		"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"%d\">\n",
		w, h, w, h, fontSize)
	fmt.Fprintf(&c.b, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", w, h)
	return c
}

// Text writes s (escaped) at x, y; attrs are further SVG attributes, such
// as `text-anchor="middle"`.
func (c *Canvas) Text(x, y float64, s string, attrs ...string) {
	fmt.Fprintf(&c.b, "<text x=\"%.1f\" y=\"%.1f\"%s>%s</text>\n", x, y, join(attrs), html.EscapeString(s))
}

// TextRotated writes s turned by deg degrees about its anchor x, y.
func (c *Canvas) TextRotated(x, y, deg float64, s string, attrs ...string) {
	fmt.Fprintf(&c.b, "<text x=\"%.1f\" y=\"%.1f\" transform=\"rotate(%g %.1f %.1f)\"%s>%s</text>\n",
		x, y, deg, x, y, join(attrs), html.EscapeString(s))
}

// Line draws a straight line.
func (c *Canvas) Line(x1, y1, x2, y2 float64, stroke string, attrs ...string) {
	fmt.Fprintf(&c.b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"%s/>\n", x1, x2, y1, y2, stroke, join(attrs))
}

// Circle draws a filled circle.
func (c *Canvas) Circle(x, y, r float64, fill string, opacity float64) {
	fmt.Fprintf(&c.b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\" fill-opacity=\"%g\"/>\n", x, y, r, fill, opacity)
}

// Bytes ends the drawing and returns it; draw nothing after.
func (c *Canvas) Bytes() []byte {
	c.b.WriteString("</svg>\n")
	return c.b.Bytes()
}

// WriteFile ends the drawing and writes it to path.
func (c *Canvas) WriteFile(path string) error {
	if err := os.WriteFile(path, c.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write the plot: %w", err)
	}
	return nil
}

func join(attrs []string) string {
	if len(attrs) == 0 {
		return ""
	}
	return " " + strings.Join(attrs, " ")
}

// Scale maps data values onto an axis: linearly from Min to Max, or
// logarithmically (Min above 0), values outside clamped to the ends.
type Scale struct {
	Min, Max float64
	Log      bool
}

// at is v's position along the axis, 0 at Min to 1 at Max.
func (s Scale) at(v float64) float64 {
	if s.Log {
		v = math.Min(math.Max(v, s.Min), s.Max)
		return (math.Log10(v) - math.Log10(s.Min)) / (math.Log10(s.Max) - math.Log10(s.Min))
	}
	if s.Max == s.Min {
		return 0
	}
	return (v - s.Min) / (s.Max - s.Min)
}

// Frame is a rectangle of the canvas with an x and a y scale.
type Frame struct {
	c                        *Canvas
	Left, Top, Width, Height float64
	X, Y                     Scale
}

// Frame returns the frame with its top left corner at left, top.
func (c *Canvas) Frame(left, top, width, height float64, x, y Scale) *Frame {
	return &Frame{c: c, Left: left, Top: top, Width: width, Height: height, X: x, Y: y}
}

// PX is the canvas x of data x.
func (f *Frame) PX(x float64) float64 { return f.Left + f.X.at(x)*f.Width }

// PY is the canvas y of data y.
func (f *Frame) PY(y float64) float64 { return f.Top + f.Height - f.Y.at(y)*f.Height }

// Bottom is the canvas y of the frame's lower edge.
func (f *Frame) Bottom() float64 { return f.Top + f.Height }

// GridY draws a horizontal grid line at each y, labelled on the left.
func (f *Frame) GridY(ys []float64, label func(float64) string, stroke string) {
	for _, y := range ys {
		f.c.Line(f.Left, f.PY(y), f.Left+f.Width, f.PY(y), stroke)
		f.c.Text(f.Left-6, f.PY(y)+4, label(y), `text-anchor="end"`)
	}
}

// TicksX labels each x below the frame, with a short tick mark if mark.
func (f *Frame) TicksX(xs []float64, label func(float64) string, mark bool) {
	for _, x := range xs {
		if mark {
			f.c.Line(f.PX(x), f.Bottom(), f.PX(x), f.Bottom()+4, "black")
		}
		f.c.Text(f.PX(x), f.Bottom()+17, label(x), `text-anchor="middle"`)
	}
}

// Box draws the frame's border.
func (f *Frame) Box() {
	fmt.Fprintf(&f.c.b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"black\"/>\n",
		f.Left, f.Top, f.Width, f.Height)
}

// Axes draws the frame's left and bottom edges only.
func (f *Frame) Axes() {
	f.c.Line(f.Left, f.Bottom(), f.Left+f.Width, f.Bottom(), "black")
	f.c.Line(f.Left, f.Top, f.Left, f.Bottom(), "black")
}

// LabelY writes the y axis's title turned upright, centred on the frame's
// height, at canvas x.
func (f *Frame) LabelY(x float64, s string) {
	f.c.TextRotated(x, f.Top+f.Height/2, -90, s, `text-anchor="middle"`)
}

// Span shades the frame's full height between data x0 and x1 (at least
// one unit wide), with title shown on hover.
func (f *Frame) Span(x0, x1 float64, fill, title string) {
	fmt.Fprintf(&f.c.b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" opacity=\"0.7\"><title>%s</title></rect>\n",
		f.PX(x0), f.Top, math.Max(f.PX(x1)-f.PX(x0), 1), f.Height, fill, html.EscapeString(title))
}

// Dot draws a point of the data.
func (f *Frame) Dot(x, y, r float64, fill string, opacity float64) {
	f.c.Circle(f.PX(x), f.PY(y), r, fill, opacity)
}

// Series is one line of a frame.
type Series struct {
	ID, Label, Color string
	Dashed           bool
	X, Y             []float64
}

func (s Series) dash() string {
	if s.Dashed {
		return ` stroke-dasharray="6 4"`
	}
	return ""
}

// Lines draws each series as a polyline and its legend, one row per
// series, to the right of the frame.
func (f *Frame) Lines(series []Series) {
	right := f.Left + f.Width
	for i, s := range series {
		pts := make([]string, len(s.X))
		for j := range s.X {
			pts[j] = fmt.Sprintf("%.1f,%.1f", f.PX(s.X[j]), f.PY(s.Y[j]))
		}
		fmt.Fprintf(&f.c.b, "<polyline id=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"%s\"/>\n",
			html.EscapeString(s.ID), s.Color, s.dash(), strings.Join(pts, " "))
		ly := f.Top + 14 + 20*float64(i)
		f.c.Line(right+15, ly, right+40, ly, s.Color, `stroke-width="2"`+s.dash())
		f.c.Text(right+46, ly+4, s.Label)
	}
}

// Step is a step of 1, 2 or 5 times a power of ten that cuts [0, v]
// into about n ticks.
func Step(v float64, n int) float64 {
	raw := v / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5} {
		if raw <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

// Ticks returns 0, step, 2 step, ... up to max, which counts as reached
// when the sum of the steps falls short of it only by rounding.
func Ticks(max, step float64) []float64 {
	var out []float64
	for i := 0.0; i*step <= max+step*1e-9; i++ {
		out = append(out, i*step)
	}
	return out
}

// TickLabel prints v with as many decimals as step needs.
func TickLabel(v, step float64) string {
	return fmt.Sprintf("%.*f", max(0, int(-math.Floor(math.Log10(step)))), v)
}
