package plot

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestStepAndTicks(t *testing.T) {
	for _, tt := range []struct {
		max   float64
		n     int
		step  float64
		ticks int
	}{{10, 10, 1, 11}, {7.3, 5, 2, 4}, {0.03, 5, 0.01, 4}, {1234, 5, 500, 3}, {0.3, 3, 0.1, 4}} {
		step := Step(tt.max, tt.n)
		if math.Abs(step-tt.step) > tt.step*1e-9 {
			t.Errorf("Step(%v, %d) = %v, want %v", tt.max, tt.n, step, tt.step)
		}
		if got := Ticks(tt.max, step); len(got) != tt.ticks || got[0] != 0 {
			t.Errorf("Ticks(%v, %v) = %v, want %d ticks from 0", tt.max, step, got, tt.ticks)
		}
	}
	if got := TickLabel(0.25, 0.05); got != "0.25" {
		t.Errorf("TickLabel = %q", got)
	}
	if got := TickLabel(2000, 500); got != "2000" {
		t.Errorf("TickLabel = %q", got)
	}
}

func TestScales(t *testing.T) {
	c := New(200, 100, 10)
	f := c.Frame(10, 10, 100, 50, Scale{Max: 10}, Scale{Min: 1, Max: 1000, Log: true})
	for _, tt := range []struct{ got, want float64 }{
		{f.PX(0), 10}, {f.PX(5), 60}, {f.PX(10), 110},
		{f.PY(1), 60}, {f.PY(10), 60 - 50.0/3}, {f.PY(1000), 10},
		{f.PY(0.001), 60}, {f.PY(1e9), 10}, // clamped
	} {
		if math.Abs(tt.got-tt.want) > 1e-9 {
			t.Errorf("got %v, want %v", tt.got, tt.want)
		}
	}
}

// TestDocument draws one of everything and reads it back as XML: it is
// well-formed, text is escaped, and each series is a polyline with its
// points.
func TestDocument(t *testing.T) {
	c := New(300, 200, 12)
	f := c.Frame(40, 20, 200, 120, Scale{Max: 4}, Scale{Max: 100})
	f.GridY(Ticks(100, 50), func(v float64) string { return TickLabel(v, 50) }, "#eee")
	f.TicksX(Ticks(4, 1), func(v float64) string { return TickLabel(v, 1) }, true)
	f.Box()
	f.Axes()
	f.LabelY(10, "ms <p99>")
	f.Span(1, 2, "#fde2c8", `kill "n1" & restart`)
	f.Dot(3, 50, 2, "red", 0.5)
	f.Lines([]Series{{ID: "a", Label: "a & b", Color: "blue", X: []float64{0, 1, 2}, Y: []float64{0, 50, 100}},
		{ID: "t", Label: "target", Color: "grey", Dashed: true, X: []float64{0, 4}, Y: []float64{80, 80}}})
	c.TextRotated(50, 30, 90, "1 kill-leader n2")
	data := c.Bytes()
	dec := xml.NewDecoder(bytes.NewReader(data))
	var texts []string
	lines := map[string]string{}
	var inText bool
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed: %v\n%s", err, data)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			inText = el.Name.Local == "text"
			if el.Name.Local == "polyline" {
				var id, pts string
				for _, a := range el.Attr {
					switch a.Name.Local {
					case "id":
						id = a.Value
					case "points":
						pts = a.Value
					}
				}
				lines[id] = pts
			}
		case xml.CharData:
			if inText {
				texts = append(texts, string(el))
			}
		case xml.EndElement:
			inText = false
		}
	}
	for _, want := range []string{"ms <p99>", "a & b", "target", "1 kill-leader n2", "50", "4"} {
		if !slices.Contains(texts, want) {
			t.Errorf("no text %q in %q", want, texts)
		}
	}
	if lines["a"] != "40.0,140.0 90.0,80.0 140.0,20.0" || len(strings.Fields(lines["t"])) != 2 {
		t.Errorf("polylines %v", lines)
	}
	if !bytes.Contains(data, []byte(`stroke-dasharray="6 4"`)) || !bytes.Contains(data, []byte("<title>kill &#34;n1&#34; &amp; restart</title>")) {
		t.Errorf("no dashes or no escaped title:\n%s", data)
	}
}
