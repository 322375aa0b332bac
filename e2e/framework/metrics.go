package framework

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scrape GETs a Prometheus text endpoint (5 s timeout) and returns its
// body; a status other than 200 is an error.
func Scrape(url string) (string, error) {
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}

// Metrics is one scrape of a Prometheus text endpoint, parsed.
type Metrics map[string]*dto.MetricFamily

// APIServerMetrics scrapes kube-apiserver's /metrics with the admin client.
func (e *Env) APIServerMetrics(ctx context.Context) (Metrics, error) {
	b, err := e.Clientset.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	return ParseMetrics(string(b))
}

// ParseMetrics parses the Prometheus text exposition format.
func ParseMetrics(text string) (Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("failed to parse metrics: %w", err)
	}
	return fams, nil
}

// Value returns the sum of the samples of the named counter, gauge or
// untyped metric whose labels include every pair given, and whether any
// matched. For a histogram or summary, name_sum and name_count select
// its sum and count.
func (m Metrics) Value(name string, labels map[string]string) (float64, bool) {
	base, part := name, ""
	for _, suffix := range []string{"_sum", "_count"} {
		if f, ok := m[strings.TrimSuffix(name, suffix)]; ok && strings.HasSuffix(name, suffix) && (f.GetType() == dto.MetricType_HISTOGRAM || f.GetType() == dto.MetricType_SUMMARY) {
			base, part = strings.TrimSuffix(name, suffix), suffix
		}
	}
	f, ok := m[base]
	if !ok {
		return 0, false
	}
	var sum float64
	found := false
	for _, s := range f.GetMetric() {
		if !hasLabels(s, labels) {
			continue
		}
		found = true
		switch {
		case part == "_sum" && s.GetHistogram() != nil:
			sum += s.GetHistogram().GetSampleSum()
		case part == "_count" && s.GetHistogram() != nil:
			sum += float64(s.GetHistogram().GetSampleCount())
		case part == "_sum" && s.GetSummary() != nil:
			sum += s.GetSummary().GetSampleSum()
		case part == "_count" && s.GetSummary() != nil:
			sum += float64(s.GetSummary().GetSampleCount())
		case s.GetCounter() != nil:
			sum += s.GetCounter().GetValue()
		case s.GetGauge() != nil:
			sum += s.GetGauge().GetValue()
		case s.GetUntyped() != nil:
			sum += s.GetUntyped().GetValue()
		}
	}
	return sum, found
}

func hasLabels(s *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range s.GetLabel() {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// ExposedNames are the sample names a scrape exposes: a counter or gauge
// family's name, a histogram's _bucket, _sum and _count.
func ExposedNames(m Metrics) map[string]bool {
	out := map[string]bool{}
	for name, f := range m {
		switch f.GetType().String() {
		case "HISTOGRAM":
			out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
		case "SUMMARY":
			out[name], out[name+"_sum"], out[name+"_count"] = true, true, true
		default:
			out[name] = true
		}
	}
	return out
}
