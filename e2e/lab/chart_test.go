//go:build e2e

package lab

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"testing"
)

// The chart is valid SVG with one curve and legend entry per profile measured.
func TestLatencyChart(t *testing.T) {
	r := &Report{Cells: []Cell{
		{Profile: "plain", Kind: "external FQDN", Loss: 10, MS: []float64{1, 5004, 5005, 10011}, P50: 5004, P99: 10011},
		{Profile: "resilient", Kind: "external FQDN", Loss: 10, MS: []float64{0.5, 0.6, 1000, 2000}, P50: 0.6, P99: 2000},
		{Profile: "nodelocal", Kind: "external FQDN", Loss: 10, MS: []float64{1, 1.3, 3.3, 10.2}, P50: 1.3, P99: 10.2},
		{Profile: "plain", Kind: "external FQDN", Loss: 0, MS: []float64{1, 2}},
	}}
	svg, err := r.LatencyChart("external FQDN", 10)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(svg))
	for {
		if _, err := dec.Token(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("not valid XML: %v", err)
		}
	}
	for _, want := range []string{"<svg", "plain (p50 5004, p99 10011 ms)", "resilient (p50 0.6, p99 2000 ms)", "nodelocal (p50 1.3, p99 10 ms)"} {
		if !bytes.Contains(svg, []byte(want)) {
			t.Errorf("chart lacks %q", want)
		}
	}
	if bytes.Contains(svg, []byte("resilient-a2")) {
		t.Error("a profile without measurements is drawn")
	}
	if _, err := r.LatencyChart("external FQDN", 50); err == nil {
		t.Error("a chart with nothing to draw")
	}
}
