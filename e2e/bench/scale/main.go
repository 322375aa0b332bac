// Command scale measures dnstune at the seeds' size on one real
// kube-apiserver (with etcd): pods stored in 2,000 namespaces (Deployments'
// ReplicaSets, StatefulSets, Jobs and bare pods; no kubelet, the
// controller-manager stopped so the objects stay as made), grown to each
// size in turn, and at each size the real webhook restarted as the leader
// with reports on: its RSS and heap over time, the watches and LIST calls
// it makes, the time until every PolicyReport is written, the apiserver CPU
// that takes, admission p50 against the empty cluster's, and dnstune report
// -A and the rollout plan. make bench runs it and puts its section and
// chart into BENCHMARKS.md.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/internal/report"
	"github.com/dnstune/dnstune/policy"
)

var (
	sizesFlag  = flag.String("sizes", "1000,10000,30000", "pod counts, grown in this order")
	namespaces = flag.Int("namespaces", 2000, "opted-in namespaces the pods are spread over")
	clients    = flag.Int("clients", 32, "concurrent clients loading objects")
	probes     = flag.Int("probes", 200, "sequential pod creates (server-side dry run) per round for admission p50")
	rounds     = flag.Int("rounds", 5, "rounds of -probes creates; the p50 is the median of the rounds' p50s, with their range")
	out        = flag.String("out", "BENCHMARKS.md", "report to put the section into (empty: stdout only)")
	chartPath  = flag.String("chart", "docs/scale-rss.svg", "RSS chart, relative to the repository")
	nodeBench  = flag.String("nodebench", "bin/nodebench.txt", "output of the node agent's BenchmarkScrapeAt30kNeighbours, relative to the repository (empty or missing: left out)")
)

const (
	beginMarker = "<!-- scale: written by go run ./e2e/bench/scale -->"
	endMarker   = "<!-- /scale -->"
	probeNS     = "scale-probe"
)

func main() {
	framework.QuietControllerRuntime()
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

// sample is one reading of the webhook process.
type sample struct {
	at        time.Duration
	rss, heap float64 // MiB
}

// result is one size's measurements.
type result struct {
	pods, workloads                 int
	samples                         []sample
	peakRSS, peakHeap, endRSS       float64
	watches, lists                  float64
	reportsIn                       time.Duration
	apiCPU                          float64
	p50, p50Empty                   float64
	p50Range, p50EmptyRange         [2]float64 // lowest and highest round p50
	reportWall, rolloutWall         time.Duration
	reportRSS                       float64
	reportsWritten, reportsExpected int
}

type owner struct {
	kind string
	ref  metav1.OwnerReference
}

func run() error {
	ctx := context.Background()
	var sizes []int
	for _, s := range strings.Split(*sizesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return fmt.Errorf("-sizes: %q is not a pod count", s)
		}
		sizes = append(sizes, n)
	}
	shipped, err := framework.ShippedPolicy()
	if err != nil {
		return err
	}
	fmt.Println("· starting the control plane and the webhook (reports on)")
	env, err := framework.Start(ctx, framework.Options{Policy: shipped, WebhookArgs: []string{"--report-interval=30m"}})
	if err != nil {
		return err
	}
	defer func() { env.Stop(); _ = os.RemoveAll(env.Dir) }()
	env.KCM.Stop() // the objects stay as made: no controller adds or deletes pods
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = 2000, 4000
	c, err := client.New(cfg, client.Options{Scheme: framework.Scheme})
	if err != nil {
		return err
	}
	if err := installCRD(ctx, c); err != nil {
		return err
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: probeNS, Labels: map[string]string{policy.InjectLabel: policy.InjectEnabled}}}); err != nil {
		return err
	}
	// The empty cluster's p50, taken as at every size: after a webhook
	// restart and its first report scan, with a warm-up.
	emptyRun, err := measure(ctx, env, c, 0)
	if err != nil {
		return err
	}
	empty, emptyRange := emptyRun.p50, emptyRun.p50Range
	fmt.Printf("· admission p50 on the empty cluster: %.2f ms\n", empty)

	fmt.Printf("· %d namespaces, each with a Deployment (and its ReplicaSet), a StatefulSet and a Job\n", *namespaces)
	start := time.Now()
	owners := make([][3]owner, *namespaces)
	if err := parallel(*namespaces, func(i int) error {
		ns := nsName(i)
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
		var err error
		owners[i], err = makeOwners(ctx, c, ns)
		return err
	}); err != nil {
		return err
	}
	fmt.Printf("  made in %s\n", time.Since(start).Round(time.Millisecond))

	var results []result
	loaded := 0
	for si, size := range sizes {
		start := time.Now()
		if err := parallel(size-loaded, func(k int) error { return makePod(ctx, c, loaded+k, owners) }); err != nil {
			return err
		}
		fmt.Printf("· %d pods stored (%d new in %s)\n", size, size-loaded, time.Since(start).Round(time.Millisecond))
		loaded = size
		if si == 0 {
			// Opted in after the first pods: those are out of date, later ones mutated.
			if err := parallel(*namespaces, func(i int) error {
				patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, policy.InjectLabel, policy.InjectEnabled)
				return c.Patch(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName(i)}}, client.RawPatch(types.MergePatchType, []byte(patch)))
			}); err != nil {
				return err
			}
		}
		r, err := measure(ctx, env, c, size)
		if err != nil {
			return err
		}
		r.p50Empty, r.p50EmptyRange = empty, emptyRange
		results = append(results, r)
		fmt.Printf("  RSS peak %.0f MiB, heap peak %.0f MiB, %v watches, %v LISTs, reports in %s (%d/%d), admission p50 %.2f ms, report -A %s (%.0f MiB)\n",
			r.peakRSS, r.peakHeap, r.watches, r.lists, r.reportsIn.Round(time.Millisecond), r.reportsWritten, r.reportsExpected, r.p50, r.reportWall.Round(time.Millisecond), r.reportRSS)
	}
	section := render(results)
	fmt.Println(section)
	chart := *chartPath
	if !filepath.IsAbs(chart) {
		chart = filepath.Join(framework.RepoRoot(), chart)
	}
	if err := drawChart(results, chart); err != nil {
		return err
	}
	if *out == "" {
		return nil
	}
	return framework.ReplaceSection(filepath.Join(framework.RepoRoot(), *out), beginMarker, endMarker, section)
}

func nsName(i int) string { return fmt.Sprintf("scale-%04d", i) }

func installCRD(ctx context.Context, c client.Client) error {
	data, err := os.ReadFile(filepath.Join(framework.RepoRoot(), "manifests", "reports.yaml"))
	if err != nil {
		return err
	}
	objs, err := framework.Objects(data)
	if err != nil {
		return err
	}
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			if err := c.Create(ctx, o); err != nil {
				return err
			}
		}
	}
	return nil
}

// parallel runs f(0..n-1) on -clients goroutines and returns the first error.
func parallel(n int, f func(int) error) error {
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

func template(app string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
	}
}

func makeOwners(ctx context.Context, c client.Client, ns string) ([3]owner, error) {
	var o [3]owner
	sel := func(app string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](8), Selector: sel("web"), Template: template("web")}}
	if err := c.Create(ctx, dep); err != nil {
		return o, err
	}
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-5d9c8f7b6", Namespace: ns,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: dep.Name, UID: dep.UID, Controller: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](8), Selector: sel("web"), Template: template("web")}}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](4), Selector: sel("db"), Template: template("db")}}
	tj := template("batch")
	tj.Spec.RestartPolicy = corev1.RestartPolicyNever
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "batch", Namespace: ns}, Spec: batchv1.JobSpec{Parallelism: ptr.To[int32](2), Template: tj}}
	for _, obj := range []client.Object{rs, sts, job} {
		if err := c.Create(ctx, obj); err != nil {
			return o, err
		}
	}
	o[0] = owner{"ReplicaSet", metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: ptr.To(true)}}
	o[1] = owner{"StatefulSet", metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: sts.Name, UID: sts.UID, Controller: ptr.To(true)}}
	o[2] = owner{"Job", metav1.OwnerReference{APIVersion: "batch/v1", Kind: "Job", Name: job.Name, UID: job.UID, Controller: ptr.To(true)}}
	return o, nil
}

// makePod stores pod i: namespace i mod N; by i div N a ReplicaSet's, a
// StatefulSet's, a Job's or a bare pod.
func makePod(ctx context.Context, c client.Client, i int, owners [][3]owner) error {
	n := i % *namespaces
	kind := (i / *namespaces) % 4
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p-%06d", i), Namespace: nsName(n)}, Spec: template("x").Spec}
	if kind < 3 {
		p.OwnerReferences = []metav1.OwnerReference{owners[n][kind].ref}
		p.Labels = template([]string{"web", "db", "batch"}[kind]).Labels
	}
	if kind == 2 {
		p.Spec.RestartPolicy = corev1.RestartPolicyNever
	}
	return c.Create(ctx, p)
}

// admissionP50 is the median of -rounds rounds' p50 of -probes sequential
// creates, after 50 that warm up, and the range of the rounds' p50s.
func admissionP50(ctx context.Context, c client.Client) (float64, [2]float64, error) {
	var p50s []float64
	for round := range *rounds {
		lat := make([]float64, 0, *probes)
		n := *probes
		if round == 0 {
			n += 50
		}
		for i := range n {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("probe-%d", i), Namespace: probeNS}, Spec: template("probe").Spec}
			t := time.Now()
			if err := c.Create(ctx, p, client.DryRunAll); err != nil {
				return 0, [2]float64{}, err
			}
			if round > 0 || i >= 50 {
				lat = append(lat, float64(time.Since(t).Microseconds())/1000)
			}
		}
		slices.Sort(lat)
		p50s = append(p50s, lat[len(lat)/2])
	}
	slices.Sort(p50s)
	return p50s[len(p50s)/2], [2]float64{p50s[0], p50s[len(p50s)-1]}, nil
}

// apiMetrics reads the apiserver's watch count, LIST count and CPU.
func apiMetrics(ctx context.Context, env *framework.Env) (watches, lists, cpu float64, err error) {
	m, err := env.APIServerMetrics(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	watches, _ = m.Value("apiserver_longrunning_requests", map[string]string{"verb": "WATCH"})
	lists, _ = m.Value("apiserver_request_total", map[string]string{"verb": "LIST"})
	cpu, _ = m.Value("process_cpu_seconds_total", nil)
	return watches, lists, cpu, nil
}

// measure restarts the webhook (so it starts as the leader with nothing
// written yet) and follows it until every namespace's report is written.
func measure(ctx context.Context, env *framework.Env, c client.Client, pods int) (result, error) {
	r := result{pods: pods}
	env.Webhook.Stop()
	time.Sleep(2 * time.Second) // its watches close
	w0, l0, cpu0, err := apiMetrics(ctx, env)
	if err != nil {
		return r, err
	}
	logPath := env.Webhook.Proc.LogPath
	logStart := fileSize(logPath)
	t0 := time.Now()
	if err := env.Webhook.Start(); err != nil {
		return r, err
	}
	pid := env.Webhook.Proc.Pid()
	done := false
	deadline := t0.Add(10 * time.Minute)
	for !done || time.Since(t0) < r.reportsIn+10*time.Second {
		if time.Now().After(deadline) {
			return r, fmt.Errorf("no complete report within 10m at %d pods", pods)
		}
		s := sample{at: time.Since(t0), rss: rssMiB(pid)}
		if text, err := env.Webhook.Metrics(); err == nil {
			if m, err := framework.ParseMetrics(text); err == nil {
				h, _ := m.Value("go_memstats_heap_inuse_bytes", nil)
				s.heap = h / (1 << 20)
			}
		}
		r.samples = append(r.samples, s)
		r.peakRSS, r.peakHeap = max(r.peakRSS, s.rss), max(r.peakHeap, s.heap)
		if !done {
			if line, ok := reportsUpdated(logPath, logStart); ok {
				done, r.reportsIn = true, time.Since(t0)
				r.workloads = line.Workloads
				w1, l1, cpu1, err := apiMetrics(ctx, env)
				if err != nil {
					return r, err
				}
				r.watches, r.lists, r.apiCPU = w1-w0, l1-l0, cpu1-cpu0
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	r.endRSS = r.samples[len(r.samples)-1].rss
	var reports metav1.PartialObjectMetadataList
	reports.SetGroupVersionKind(report.PolicyReportGVK.GroupVersion().WithKind("PolicyReportList"))
	if err := c.List(ctx, &reports); err != nil {
		return r, err
	}
	opted, err := optedIn(ctx, c)
	if err != nil {
		return r, err
	}
	r.reportsWritten, r.reportsExpected = len(reports.Items), opted
	if r.p50, r.p50Range, err = admissionP50(ctx, c); err != nil {
		return r, err
	}
	if r.reportWall, r.reportRSS, err = cli(env, "report", "-A", "-o", "json"); err != nil {
		return r, err
	}
	if r.rolloutWall, _, err = cli(env, "rollout", "-A"); err != nil {
		return r, err
	}
	return r, nil
}

func optedIn(ctx context.Context, c client.Client) (int, error) {
	var l metav1.PartialObjectMetadataList
	l.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NamespaceList"))
	if err := c.List(ctx, &l); err != nil {
		return 0, err
	}
	n := 0
	for _, ns := range l.Items {
		if v := ns.Labels[policy.InjectLabel]; v == policy.InjectEnabled || v == policy.InjectAudit {
			n++
		}
	}
	return n, nil
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

type reportsLine struct {
	Msg        string `json:"msg"`
	Namespaces int    `json:"namespaces"`
	Workloads  int    `json:"workloads"`
}

// reportsUpdated finds the first "reports updated" line of the webhook's
// log written after offset.
func reportsUpdated(path string, offset int64) (reportsLine, bool) {
	f, err := os.Open(path) // #nosec G304 -- the harness's own log
	if err != nil {
		return reportsLine{}, false
	}
	defer func() { _ = f.Close() }()
	if _, err := f.Seek(offset, 0); err != nil {
		return reportsLine{}, false
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l reportsLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "reports updated" {
			return l, true
		}
	}
	return reportsLine{}, false
}

func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// cli runs the dnstune CLI against the cluster with the shipped policy and
// returns its wall time and peak RSS; exit 2 (out of date) is not an error.
func cli(env *framework.Env, args ...string) (time.Duration, float64, error) {
	policyFile := filepath.Join(env.Dir, "scale-policy.yaml")
	shipped, err := framework.ShippedPolicy()
	if err != nil {
		return 0, 0, err
	}
	if err := os.WriteFile(policyFile, []byte(shipped), 0o600); err != nil {
		return 0, 0, err
	}
	cmd := exec.Command(env.Dnstune, append(args, "--kubeconfig", env.Kubeconfig, "--policy", policyFile)...) // #nosec G204 -- the harness's binary
	cmd.Stdout = nil
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t := time.Now()
	err = cmd.Run()
	wall := time.Since(t)
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 2 {
		err = nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("dnstune %v: %w: %s", args, err, stderr.String())
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	rss := 0.0
	if ru != nil {
		rss = float64(ru.Maxrss) / 1024
	}
	return wall, rss, nil
}

func render(rs []result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n## At the seeds' scale: pods in %d namespaces (`go run ./e2e/bench/scale`, part of `make bench`)\n\n", beginMarker, *namespaces)
	fmt.Fprintf(&b, "One kube-apiserver and etcd on %s, measured %s. Pods are stored only (no kubelet; the\n", framework.Machine(), time.Now().UTC().Format("2006-01-02"))
	b.WriteString("controller-manager is stopped so the objects stay as made), a quarter each owned by a\n" +
		"Deployment's ReplicaSet, a StatefulSet, a Job, or bare; the first size's pods were created before\n" +
		"their namespaces were opted in (out of date), later ones through the webhook. At each size the\n" +
		"webhook (the only process with reports on, `--reports=auto`, the CRD installed) is restarted and\n" +
		"becomes the leader: \"reports\" is the time from its start until its first scan wrote every\n" +
		"namespace's PolicyReport; watches and LISTs are the apiserver's own counts (`apiserver_longrunning_requests`,\n" +
		"`apiserver_request_total`) across that window, apiserver CPU its `process_cpu_seconds_total`.\n" +
		"Admission p50: server-side dry-run pod creates in an opted-in namespace, sequential, in rounds (the\n" +
		"median of the rounds' p50s, and their range), against the empty cluster's taken the same way in the same run.\n\n")
	if len(rs) > 0 {
		fmt.Fprintf(&b, "Admission p50 on the empty cluster, the same way: %.2f ms [rounds %.2f–%.2f].\n\n", rs[0].p50Empty, rs[0].p50EmptyRange[0], rs[0].p50EmptyRange[1])
	}
	b.WriteString("| pods | workloads | webhook RSS peak / after | heap peak | watches opened | LISTs | reports (written) | apiserver CPU | admission p50 [rounds] | `report -A` (RSS) | `rollout -A` plan |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %d | %d | %.0f / %.0f MiB | %.0f MiB | %.0f | %.0f | %.1f s (%d/%d) | %.1f s | %.2f ms [%.2f–%.2f] | %.1f s (%.0f MiB) | %.1f s |\n",
			r.pods, r.workloads, r.peakRSS, r.endRSS, r.peakHeap, r.watches, r.lists, r.reportsIn.Seconds(), r.reportsWritten, r.reportsExpected,
			r.apiCPU, r.p50, r.p50Range[0], r.p50Range[1], r.reportWall.Seconds(), r.reportRSS, r.rolloutWall.Seconds())
	}
	fmt.Fprintf(&b, "\n![Webhook RSS over time from its start as the leader, per size](%s)\n\n", *chartPath)
	b.WriteString(goals(rs))
	b.WriteString(nodeSection())
	b.WriteString(endMarker + "\n")
	return b.String()
}

// goals checks the targets against the largest size, in words.
func goals(rs []result) string {
	if len(rs) == 0 {
		return ""
	}
	last := rs[len(rs)-1]
	mark := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	watchesConst := true
	for _, r := range rs {
		watchesConst = watchesConst && r.watches == rs[0].watches
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Goals at %d pods in %d namespaces:\n\n", last.pods, *namespaces)
	fmt.Fprintf(&b, "- webhook RSS ≤ 128 MiB with reports on: %s (peak %.0f MiB, %.0f MiB after the first scan);\n", mark(last.peakRSS <= 128), last.peakRSS, last.endRSS)
	fmt.Fprintf(&b, "- watches do not grow with namespaces: %s (%.0f at every size: the namespace and NetworkPolicy informers; the report scan opens none);\n", mark(watchesConst), last.watches)
	fmt.Fprintf(&b, "- every PolicyReport within 60 s of the leader's start: %s (%.1f s, most of it the %d server-side applies at the writer's %d requests/s);\n", mark(last.reportsIn <= time.Minute), last.reportsIn.Seconds(), last.reportsExpected, 50)
	noise := ""
	if last.p50 < last.p50Empty {
		noise = "; faster than the empty cluster, so what this run shows is this machine's run-to-run noise, not a cost of scale"
	}
	fmt.Fprintf(&b, "- admission p50 within 10%% of the empty cluster's: %s (%.2f ms against %.2f ms; the rounds' p50s spread %.2f–%.2f ms at this size, %.2f–%.2f ms empty%s);\n",
		mark(last.p50 <= 1.1*last.p50Empty), last.p50, last.p50Empty, last.p50Range[0], last.p50Range[1], last.p50EmptyRange[0], last.p50EmptyRange[1], noise)
	fmt.Fprintf(&b, "- `report -A` over every pod in ≤ 10 s: %s (%.1f s, %.0f MiB).\n\n", mark(last.reportWall <= 10*time.Second), last.reportWall.Seconds(), last.reportRSS)
	return b.String()
}

// nodeSection quotes the node agent's benchmark, run before (make bench).
func nodeSection() string {
	if *nodeBench == "" {
		return ""
	}
	data, err := os.ReadFile(filepath.Join(framework.RepoRoot(), *nodeBench))
	if err != nil {
		return ""
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "BenchmarkScrapeAt30kNeighbours/") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return "The node agent with 30,000 IPv4 and 30,000 IPv6 neighbour entries in the real kernel's tables (a network\n" +
		"namespace of the benchmark's own; `go test -run '^$' -bench ScrapeAt30kNeighbours ./node`, root): one scrape\n" +
		"(a check of both families and conntrack, then every metric collected) against walking the entries as text, as a\n" +
		"tool that counts `ip neigh` lines does. The agent reads the kernel's own counts (`/proc/net/stat/arp_cache`,\n" +
		"`ndisc_cache`), so its cost does not grow with the table (goal ≤ 50 ms of CPU per scrape):\n\n```\n" + strings.Join(lines, "\n") + "\n```\n\n"
}

func drawChart(rs []result, path string) error {
	p := plot.New()
	p.Title.Text = "dnstune webhook RSS from its start as the report leader"
	p.X.Label.Text = "seconds since start"
	p.Y.Label.Text = "RSS (MiB)"
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	colors := []color.RGBA{{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, {R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, {R: 0xc0, G: 0x39, B: 0x2b, A: 0xff}, {R: 0x94, G: 0x67, B: 0xbd, A: 0xff}}
	for i, r := range rs {
		pts := make(plotter.XYs, 0, len(r.samples))
		for _, s := range r.samples {
			pts = append(pts, plotter.XY{X: s.at.Seconds(), Y: s.rss})
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		line.Color, line.Width = colors[i%len(colors)], vg.Points(1.5)
		p.Add(line)
		p.Legend.Add(fmt.Sprintf("%d pods (reports in %.1f s)", r.pods, r.reportsIn.Seconds()), line)
	}
	p.Legend.Top = true
	w, err := p.WriterTo(8*vg.Inch, 4*vg.Inch, "svg")
	if err != nil {
		return err
	}
	f, err := os.Create(path) // #nosec G304 -- the repository's chart
	if err != nil {
		return err
	}
	if _, err := w.WriteTo(f); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
