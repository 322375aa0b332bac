package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// EventSink receives Kubernetes Events about the node (a client-go
// EventRecorder bound to the Node in cluster).
type EventSink interface {
	// Event records an event; eventType is Normal or Warning.
	Event(eventType, reason, message string)
}

// MonitorOptions configure a Monitor. Zero values take the defaults stated.
type MonitorOptions struct {
	Proc Proc
	// Interval between checks, default 15s.
	Interval time.Duration
	// Target is the minimum each threshold should have (what node tune set),
	// default DefaultTargets. A value below it is drift.
	Target Thresholds
	// Families to watch, default IPv4 and IPv6 (a family absent on the node is skipped).
	Families []Family
	// Reapply writes Target back when drift is seen. Needs the privilege node tune has.
	Reapply bool
	// AutoRaise doubles the thresholds (keeping ratios) when the table passes
	// 80% of gc_thresh3 or overflows, up to MaxGCThresh3. Needs privilege.
	AutoRaise    bool
	MaxGCThresh3 int
	// Events may be nil (not in a cluster).
	Events EventSink
	Log    logr.Logger
}

type familyState struct {
	stat   Stat
	thresh Thresholds
	// target is this family's minimum: MonitorOptions.Target, raised by
	// --auto-raise for this family only.
	target Thresholds
	seen   bool
	drift  bool
}

// Monitor watches the neighbour tables and conntrack, and exports them.
type Monitor struct {
	o MonitorOptions

	mu           sync.Mutex
	fam          map[Family]*familyState
	conntrack    Stat
	hasConntrack bool
	ready        bool

	overflows  *prometheus.CounterVec
	autoRaises *prometheus.CounterVec
	readErrors *prometheus.CounterVec
	reapplies  *prometheus.CounterVec
}

// DefaultInterval is the monitor's time between checks when
// MonitorOptions.Interval is unset (dnstune node monitor --interval).
const DefaultInterval = 15 * time.Second

// NewMonitor returns a monitor; call Check or Run.
func NewMonitor(o MonitorOptions) *Monitor {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Target == (Thresholds{}) {
		o.Target = DefaultTargets
	}
	if o.Families == nil {
		o.Families = []Family{IPv4, IPv6}
	}
	m := &Monitor{o: o, fam: map[Family]*familyState{}}
	m.overflows = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dnstune_node_neighbor_overflows_detected_total",
		Help: "Checks in which the kernel's table_fulls grew: new neighbour entries were refused (\"neighbor table overflow\").",
	}, []string{"family"})
	m.autoRaises = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dnstune_node_neighbor_auto_raises_total",
		Help: "Times --auto-raise doubled the thresholds.",
	}, []string{"family"})
	m.readErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dnstune_node_read_errors_total",
		Help: "Failed reads of kernel statistics or settings, by family (or conntrack).",
	}, []string{"source"})
	m.reapplies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dnstune_node_neighbor_threshold_reapplies_total",
		Help: "Times --reapply restored thresholds someone lowered.",
	}, []string{"family"})
	return m
}

// Check reads everything once, updates the metrics, and reacts to drift and
// overflow. It returns the read errors, if any (families absent on the node
// are not errors).
func (m *Monitor) Check() error {
	var errs []error
	for _, f := range m.o.Families {
		if err := m.checkFamily(f); err != nil {
			errs = append(errs, err)
		}
	}
	ct, ok, err := m.o.Proc.Conntrack()
	if err != nil {
		m.readErrors.WithLabelValues("conntrack").Inc()
		errs = append(errs, err)
	}
	m.mu.Lock()
	m.conntrack, m.hasConntrack = ct, ok
	if len(errs) == 0 {
		m.ready = true
	}
	m.mu.Unlock()
	return errors.Join(errs...)
}

func (m *Monitor) checkFamily(f Family) error {
	thresh, err := m.o.Proc.Thresholds(f)
	if errors.Is(err, ErrFamilyDisabled) {
		return nil
	}
	if err == nil {
		var stat Stat
		if stat, err = m.o.Proc.Stat(f); err == nil {
			m.observe(f, thresh, stat)
			return nil
		}
	}
	m.readErrors.WithLabelValues(string(f)).Inc()
	return err
}

func (m *Monitor) observe(f Family, thresh Thresholds, stat Stat) {
	m.mu.Lock()
	st, ok := m.fam[f]
	if !ok {
		st = &familyState{target: m.o.Target}
		m.fam[f] = st
	}
	prev, hadPrev := st.stat, st.seen
	st.stat, st.thresh, st.seen = stat, thresh, true
	target := st.target
	m.mu.Unlock()

	log := m.o.Log.WithValues("family", string(f))
	fulls := stat.Counters["table_fulls"]
	overflowed := hadPrev && fulls > prev.Counters["table_fulls"]
	if overflowed {
		m.overflows.WithLabelValues(string(f)).Inc()
		msg := fmt.Sprintf("%s neighbour table overflowed: table_fulls %d -> %d with %d entries against gc_thresh3 %d; new entries were refused, pods may lose DNS and connectivity",
			f, prev.Counters["table_fulls"], fulls, stat.Entries, thresh[2])
		log.Info(msg)
		m.event("Warning", "NeighborTableOverflow", msg)
	}

	// Drift is judged per family against that family's own target: an
	// auto-raise of IPv4 says nothing about the IPv6 table.
	drift := thresh[0] < target[0] || thresh[1] < target[1] || thresh[2] < target[2]
	if drift && !st.drift {
		msg := fmt.Sprintf("%s neighbour thresholds are %s, below dnstune's %s: something lowered them", f, thresh, target)
		log.Info(msg)
		m.event("Warning", "NeighborThresholdDrift", msg)
	}
	if drift && m.o.Reapply {
		if _, err := Tune(TuneOptions{Proc: m.o.Proc, Target: target, Families: []Family{f}}); err != nil {
			log.Error(err, "failed to re-apply thresholds")
		} else {
			m.reapplies.WithLabelValues(string(f)).Inc()
			log.Info("re-applied thresholds", "thresholds", target.String())
			drift = false
			thresh, _ = m.o.Proc.Thresholds(f)
		}
	}

	if m.o.AutoRaise {
		if next, ok := AutoRaise(thresh, stat.Entries, overflowed, m.o.MaxGCThresh3); ok {
			res, err := Tune(TuneOptions{Proc: m.o.Proc, Target: next, Families: []Family{f}})
			if err != nil {
				log.Error(err, "failed to auto-raise thresholds")
			} else {
				m.autoRaises.WithLabelValues(string(f)).Inc()
				msg := fmt.Sprintf("%s neighbour thresholds raised %s -> %s (%d entries, table_fulls %d, cap %d)", f, thresh, next, stat.Entries, fulls, m.o.MaxGCThresh3)
				log.Info(msg, "changes", fmt.Sprint(res.Changes))
				m.event("Normal", "NeighborThresholdRaised", msg)
				thresh = next
				target = Thresholds{max(target[0], next[0]), max(target[1], next[1]), max(target[2], next[2])}
			}
		}
	}
	m.mu.Lock()
	st.thresh, st.drift, st.target = thresh, drift, target
	m.mu.Unlock()
}

func (m *Monitor) event(eventType, reason, msg string) { sendEvent(m.o.Events, eventType, reason, msg) }

// sendEvent sends an Event to s, when there is a sink (not in a cluster: none).
func sendEvent(s EventSink, eventType, reason, msg string) {
	if s != nil {
		s.Event(eventType, reason, msg)
	}
}

// Run checks every Interval until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.o.Interval)
	defer t.Stop()
	for {
		if err := m.Check(); err != nil {
			m.o.Log.Error(err, "check failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Ready reports whether a check has succeeded.
func (m *Monitor) Ready() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ready
}

var (
	descEntries   = prometheus.NewDesc("dnstune_node_neighbor_entries", "Entries in the node's neighbour table, all network namespaces together.", []string{"family"}, nil)
	descThresh    = prometheus.NewDesc("dnstune_node_neighbor_gc_thresh", "Neighbour table gc_thresh1/2/3 in force.", []string{"family", "threshold"}, nil)
	descFill      = prometheus.NewDesc("dnstune_node_neighbor_fill_ratio", "Neighbour table entries / gc_thresh3; at 1 new entries are refused.", []string{"family"}, nil)
	descFulls     = prometheus.NewDesc("dnstune_node_neighbor_table_fulls_total", "Kernel count of neighbour table overflows (table_fulls, summed over CPUs).", []string{"family"}, nil)
	descForcedGC  = prometheus.NewDesc("dnstune_node_neighbor_forced_gc_runs_total", "Kernel count of forced garbage collections (table past gc_thresh2).", []string{"family"}, nil)
	descDrift     = prometheus.NewDesc("dnstune_node_neighbor_threshold_drift", "1 when a threshold is below dnstune's target (someone lowered it).", []string{"family"}, nil)
	descCTEntries = prometheus.NewDesc("dnstune_node_conntrack_entries", "Conntrack entries.", nil, nil)
	descCT        = map[string]*prometheus.Desc{
		"insert_failed": prometheus.NewDesc("dnstune_node_conntrack_insert_failed_total", "Conntrack inserts that failed (the race behind 5-second DNS stalls before Linux 5.6), summed over CPUs.", nil, nil),
		"drop":          prometheus.NewDesc("dnstune_node_conntrack_drop_total", "Packets dropped because conntrack could not track them, summed over CPUs.", nil, nil),
		"early_drop":    prometheus.NewDesc("dnstune_node_conntrack_early_drop_total", "Conntrack entries dropped early to make room (table full), summed over CPUs.", nil, nil),
		// Linux 5.6 and later resolve most clashes instead of dropping
		// the packet (6a757c07e51f); the kernel counts them as clashres.
		"clashres": prometheus.NewDesc("dnstune_node_conntrack_clash_resolved_total", "Conntrack insert clashes the kernel resolved rather than dropping the packet (clashres, Linux 5.6+), summed over CPUs.", nil, nil),
	}
)

// Describe implements prometheus.Collector.
func (m *Monitor) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEntries, descThresh, descFill, descFulls, descForcedGC, descDrift, descCTEntries} {
		ch <- d
	}
	for _, d := range descCT {
		ch <- d
	}
	m.overflows.Describe(ch)
	m.autoRaises.Describe(ch)
	m.readErrors.Describe(ch)
	m.reapplies.Describe(ch)
}

// Collect implements prometheus.Collector from the last check.
func (m *Monitor) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	for f, st := range m.fam {
		fam := string(f)
		ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(st.stat.Entries), fam)
		for i, v := range st.thresh {
			ch <- prometheus.MustNewConstMetric(descThresh, prometheus.GaugeValue, float64(v), fam, strconv.Itoa(i+1))
		}
		fill := 0.0
		if st.thresh[2] > 0 {
			fill = float64(st.stat.Entries) / float64(st.thresh[2])
		}
		ch <- prometheus.MustNewConstMetric(descFill, prometheus.GaugeValue, fill, fam)
		ch <- prometheus.MustNewConstMetric(descFulls, prometheus.CounterValue, float64(st.stat.Counters["table_fulls"]), fam)
		ch <- prometheus.MustNewConstMetric(descForcedGC, prometheus.CounterValue, float64(st.stat.Counters["forced_gc_runs"]), fam)
		drift := 0.0
		if st.drift {
			drift = 1
		}
		ch <- prometheus.MustNewConstMetric(descDrift, prometheus.GaugeValue, drift, fam)
	}
	if m.hasConntrack {
		ch <- prometheus.MustNewConstMetric(descCTEntries, prometheus.GaugeValue, float64(m.conntrack.Entries))
		for name, d := range descCT {
			if v, ok := m.conntrack.Counters[name]; ok {
				ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
			}
		}
	}
	m.mu.Unlock()
	m.overflows.Collect(ch)
	m.autoRaises.Collect(ch)
	m.readErrors.Collect(ch)
	m.reapplies.Collect(ch)
}

// Handler serves /metrics (from reg, which should include the monitor),
// /healthz (always ok) and /readyz (ok once a check succeeded).
func (m *Monitor) Handler(reg *prometheus.Registry) http.Handler { return handler(reg, m.Ready) }

// handler serves /metrics from reg, /healthz (always ok) and /readyz (ok
// once every ready says so).
func handler(reg *prometheus.Registry, ready ...func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		for _, r := range ready {
			if !r() {
				http.Error(w, "no successful check yet", http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ok"))
	})
	return mux
}
