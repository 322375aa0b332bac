// Command backends measures, on one real apiserver, what each dnstune
// backend adds to a pod create: no mutation, a hand-written
// MutatingAdmissionPolicy (the in-tree floor), the compiled admission
// policy with and without its enforced-namespace warnings, and the
// webhook: the latency and the CPU each adds per create in interleaved
// rounds of sequential creates (so drift hits every arm alike), and the
// throughput of a concurrent burst.
// make bench runs it and puts its section into BENCHMARKS.md.
package main

import (
	"context"
	"embed"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/dnstune/dnstune/admissionpolicy"
	"github.com/dnstune/dnstune/e2e/framework"
	"github.com/dnstune/dnstune/policy"
)

var (
	rounds  = flag.Int("rounds", 12, "interleaved rounds (a multiple of the 6 arms puts each in every position alike)")
	perRnd  = flag.Int("pods", 300, "sequential creates per arm per round")
	clients = flag.Int("clients", 16, "concurrent clients in the burst")
	burstN  = flag.Int("burst", 300, "creates per client in the burst")
	out     = flag.String("out", "BENCHMARKS.md", "report to put the section into (empty: stdout only)")
	pprof   = flag.String("pprof", "", "also write a kube-apiserver CPU profile of each arm under load (DIR/ARM.pprof; go tool pprof reads it); empty: none")
	pprofS  = flag.Int("pprof-seconds", 20, "seconds of each -pprof profile")
)

const (
	beginMarker = "<!-- backends: written by go run ./e2e/bench/backends -->"
	endMarker   = "<!-- /backends -->"
)

func main() {
	framework.QuietControllerRuntime()
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "backends:", err)
		os.Exit(1)
	}
}

type arm struct {
	name   string
	enter  func(ctx context.Context) error
	mutate bool
	lat    []float64
	// roundP50 is each round's median; roundCPU the CPU kube-apiserver
	// and dnstune's webhook spent per create in each round, in ms.
	roundP50, roundCPU []float64
	burst              []float64
	burstS             float64
}

// cpuSeconds is the CPU kube-apiserver and the webhook process have used
// (process_cpu_seconds_total of each): in-tree mutation is paid by the
// apiserver, the webhook's partly by dnstune.
func cpuSeconds(ctx context.Context, env *framework.Env) (float64, error) {
	m, err := env.APIServerMetrics(ctx)
	if err != nil {
		return 0, err
	}
	api, ok := m.Value("process_cpu_seconds_total", nil)
	if !ok {
		return 0, fmt.Errorf("kube-apiserver exposes no process_cpu_seconds_total")
	}
	text, err := env.Webhook.Metrics()
	if err != nil {
		return 0, fmt.Errorf("webhook metrics: %w", err)
	}
	wm, err := framework.ParseMetrics(text)
	if err != nil {
		return 0, err
	}
	wh, ok := wm.Value("process_cpu_seconds_total", nil)
	if !ok {
		return 0, fmt.Errorf("the webhook exposes no process_cpu_seconds_total")
	}
	return api + wh, nil
}

func run() error {
	ctx := context.Background()
	shipped, err := framework.ShippedPolicy()
	if err != nil {
		return err
	}
	policyText := []byte(shipped)
	pol, err := policy.Load("policy.yaml", policyText)
	if err != nil {
		return err
	}
	fmt.Println("· starting the control plane and dnstune")
	env, err := framework.Start(ctx, framework.Options{Policy: string(policyText)})
	if err != nil {
		return err
	}
	defer func() { env.Stop(); _ = os.RemoveAll(env.Dir) }()
	ns := "bench-backends"
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{policy.InjectLabel: policy.InjectEnabled}}}); err != nil {
		return err
	}
	var svc corev1.Service
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "kube-dns"}, &svc); err == nil {
		if a, err := netip.ParseAddr(svc.Spec.ClusterIP); err == nil {
			pol.ClusterDNS = a
		}
	}
	objs, err := admissionpolicy.Compile(pol, admissionpolicy.Options{NoParams: true})
	if err != nil {
		return err
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := env.Client.Get(ctx, client.ObjectKey{Name: "dnstune"}, &mwc); err != nil {
		return err
	}
	removeMWC := func(ctx context.Context) error {
		m := mwc.DeepCopy()
		m.ResourceVersion = ""
		return client.IgnoreNotFound(env.Client.Delete(ctx, m))
	}
	compiled := objs.All()
	quietObjs, err := admissionpolicy.Compile(pol, admissionpolicy.Options{NoParams: true, NoEnforcedWarnings: true})
	if err != nil {
		return err
	}
	quiet := quietObjs.All()
	handWritten, err := handWrittenPolicy("handwritten.yaml")
	if err != nil {
		return err
	}
	annotated, err := handWrittenPolicy("handwritten-annotated.yaml")
	if err != nil {
		return err
	}
	// add creates objects, policies first; remove deletes them, bindings first.
	add := func(objs []client.Object) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			for _, o := range objs {
				o = o.DeepCopyObject().(client.Object)
				if err := client.IgnoreAlreadyExists(env.Client.Create(ctx, o)); err != nil {
					return err
				}
			}
			return nil
		}
	}
	remove := func(ctx context.Context) error {
		for _, objs := range [][]client.Object{compiled, quiet, handWritten, annotated} {
			for i := len(objs) - 1; i >= 0; i-- {
				o := objs[i].DeepCopyObject().(client.Object)
				if err := client.IgnoreNotFound(env.Client.Delete(ctx, o)); err != nil {
					return err
				}
			}
		}
		return nil
	}
	settle := func(mutated bool) error {
		return framework.Eventually(30*time.Second, 100*time.Millisecond, func() error {
			p := pod(ns)
			if err := env.Client.Create(ctx, p, client.DryRunAll); err != nil {
				return err
			}
			if got := mutatedAs(p); got != mutated {
				return fmt.Errorf("mutated=%v, want %v", got, mutated)
			}
			return nil
		})
	}
	// only makes one backend the one in effect: the others' objects are
	// removed, and the wait until the previous arm's stopped acting.
	only := func(enter func(ctx context.Context) error, mutated bool) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			if err := removeMWC(ctx); err != nil {
				return err
			}
			if err := remove(ctx); err != nil {
				return err
			}
			if err := settle(false); err != nil {
				return err
			}
			if enter == nil {
				return nil
			}
			if err := enter(ctx); err != nil {
				return err
			}
			return settle(mutated)
		}
	}
	arms := []*arm{
		{name: armNone, enter: only(nil, false)},
		{name: armHandWritten, mutate: true, enter: only(add(handWritten), true)},
		{name: armAnnotated, mutate: true, enter: only(add(annotated), true)},
		{name: armCompiled, mutate: true, enter: only(add(compiled), true)},
		{name: armQuiet, mutate: true, enter: only(add(quiet), true)},
		{name: armWebhook, mutate: true, enter: only(func(ctx context.Context) error {
			if err := env.ApplyWebhookConfig(ctx, env.Webhook, admissionregistrationv1.Ignore); err != nil {
				return err
			}
			return env.WaitMutating(ctx)
		}, true)},
	}
	// A warm-up round (not counted), then interleaved rounds, the arms'
	// order rotating each round.
	for r := -1; r < *rounds; r++ {
		for i := range arms {
			a := arms[(r+1+i)%len(arms)]
			if err := a.enter(ctx); err != nil {
				return fmt.Errorf("%s: %w", a.name, err)
			}
			before, err := cpuSeconds(ctx, env)
			if err != nil {
				return err
			}
			lat, err := sequential(ctx, env, ns, *perRnd, a.mutate)
			if err != nil {
				return fmt.Errorf("%s: %w", a.name, err)
			}
			after, err := cpuSeconds(ctx, env)
			if err != nil {
				return err
			}
			if r < 0 {
				continue
			}
			a.lat = append(a.lat, lat...)
			a.roundP50 = append(a.roundP50, pct(sorted(lat), 50))
			a.roundCPU = append(a.roundCPU, (after-before)/float64(len(lat))*1000)
			fmt.Printf("· round %d, %s: p50 %.2f ms, %.3f ms CPU per create\n", r+1, a.name, pct(sorted(lat), 50), a.roundCPU[len(a.roundCPU)-1])
		}
	}
	for _, a := range arms {
		if err := a.enter(ctx); err != nil {
			return err
		}
		start := time.Now()
		b, err := burst(ctx, env, ns, *clients, *burstN, a.mutate)
		if err != nil {
			return fmt.Errorf("%s burst: %w", a.name, err)
		}
		a.burst, a.burstS = b, time.Since(start).Seconds()
		fmt.Printf("· burst, %s: %.0f creates/s\n", a.name, float64(len(b))/a.burstS)
	}
	if *pprof != "" {
		if err := os.MkdirAll(*pprof, 0o755); err != nil {
			return err
		}
		for i, a := range arms {
			if err := a.enter(ctx); err != nil {
				return err
			}
			file := filepath.Join(*pprof, fmt.Sprintf("%d-%s.pprof", i, strings.NewReplacer(" ", "-", ",", "", "(", "", ")", "", "=", "-").Replace(a.name)))
			if err := profile(ctx, env, ns, a.mutate, file); err != nil {
				return fmt.Errorf("%s profile: %w", a.name, err)
			}
			fmt.Printf("· profile, %s: %s\n", a.name, file)
		}
	}
	section := render(arms)
	fmt.Println()
	fmt.Print(section)
	if *out == "" {
		return nil
	}
	return framework.ReplaceSection(filepath.Join(framework.RepoRoot(), *out), beginMarker, endMarker, section)
}

// Arms, in the report's order.
const (
	armNone        = "no mutation"
	armHandWritten = "hand-written MutatingAdmissionPolicy (Never)"
	armAnnotated   = "hand-written + the profile annotation"
	armCompiled    = "compiled admission policy"
	armQuiet       = "compiled, --enforced-warnings=false"
	armWebhook     = "dnstune webhook"
)

//go:embed handwritten.yaml handwritten-annotated.yaml
var handWrittenFiles embed.FS

// handWrittenPolicy is the hand-written policy and binding in the embedded
// file name.
func handWrittenPolicy(name string) ([]client.Object, error) {
	text, err := handWrittenFiles.ReadFile(name)
	if err != nil {
		return nil, err
	}
	var out []client.Object
	for _, doc := range strings.Split(string(text), "\n---\n") {
		u := &unstructured.Unstructured{}
		if err := sigsyaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, u)
	}
	return out, nil
}

// resilient is what the shipped resilient profile gives the bench's pod,
// through every arm that mutates.
const resilient = "ndots:2 timeout:1 attempts:3 single-request-reopen"

// mutatedAs reports whether p came out with the resilient profile's
// options (and nothing else of its DNS changed).
func mutatedAs(p *corev1.Pod) bool {
	c := p.Spec.DNSConfig
	if c == nil || len(c.Nameservers)+len(c.Searches) > 0 {
		return false
	}
	var words []string
	for _, o := range c.Options {
		if o.Value != nil {
			words = append(words, o.Name+":"+*o.Value)
		} else {
			words = append(words, o.Name)
		}
	}
	return strings.Join(words, " ") == resilient
}

func pod(ns string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "p-", Namespace: ns},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.k8s.io/pause:3.10"}}}}
}

// sequential creates n pods one after another (server-side dry run: full
// admission and validation, no etcd write) and returns each latency in ms.
func sequential(ctx context.Context, env *framework.Env, ns string, n int, mutate bool) ([]float64, error) {
	lat := make([]float64, 0, n)
	for range n {
		p := pod(ns)
		start := time.Now()
		if err := env.Client.Create(ctx, p, client.DryRunAll); err != nil {
			return nil, err
		}
		lat = append(lat, float64(time.Since(start).Microseconds())/1000)
		if got := mutatedAs(p); got != mutate {
			return nil, fmt.Errorf("pod mutated=%v, want %v (options %v)", got, mutate, p.Spec.DNSConfig)
		}
	}
	return lat, nil
}

// profile writes a kube-apiserver CPU profile of -pprof-seconds to file
// while clients keep creating pods.
func profile(ctx context.Context, env *framework.Env, ns string, mutate bool, file string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		b, err := env.Clientset.RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", fmt.Sprint(*pprofS)).Timeout(time.Duration(*pprofS+30) * time.Second).DoRaw(ctx)
		if err == nil {
			err = os.WriteFile(file, b, 0o644)
		}
		done <- err
	}()
	var wg sync.WaitGroup
	errs := make(chan error, *clients)
	for range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if _, err := sequential(ctx, env, ns, 20, mutate); err != nil && ctx.Err() == nil {
					errs <- err
					return
				}
			}
		}()
	}
	err := <-done
	cancel()
	wg.Wait()
	close(errs)
	if err != nil {
		return err
	}
	return <-errs
}

func burst(ctx context.Context, env *framework.Env, ns string, clients, each int, mutate bool) ([]float64, error) {
	var (
		mu   sync.Mutex
		all  []float64
		errs []error
		wg   sync.WaitGroup
	)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat, err := sequential(ctx, env, ns, each, mutate)
			mu.Lock()
			defer mu.Unlock()
			all = append(all, lat...)
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return all, nil
}

func sorted(v []float64) []float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s
}

func pct(s []float64, p float64) float64 {
	if len(s) == 0 {
		return 0
	}
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

func render(arms []*arm) string {
	none := arms[0]
	var b strings.Builder
	b.WriteString(beginMarker + "\n## Backends side by side: no mutation, a hand-written MutatingAdmissionPolicy, the compiled admission policy, the webhook\n\n")
	fmt.Fprintf(&b, "%s; one apiserver, the shipped policy, a pod in an enforced namespace of the resilient profile (every mutating arm stores the same pod, checked on each create); a warm-up round, then %d interleaved rounds of %d sequential pod creates per arm (server-side dry run: full admission and validation, no etcd write), arm order rotating each round; then a burst of %d clients × %d creates per arm. `go run ./e2e/bench/backends` (part of `make bench`).\n\n",
		framework.Machine(), *rounds, *perRnd, *clients, *burstN)
	b.WriteString("Added to p50: each round's p50 less the no-mutation arm's in the same round, the median over rounds (the range in brackets); the machine drifts between rounds more than the arms differ, so differences are taken within a round. Added CPU likewise: kube-apiserver's and the webhook's `process_cpu_seconds_total` across each round's creates, per create, less the no-mutation arm's in the same round, the median over rounds.\n\n")
	b.WriteString("| arm | p50 ms | p90 ms | p99 ms | added to p50 [range] | CPU ms per create | added CPU ms per create [range] | burst creates/s |\n|---|---|---|---|---|---|---|---|\n")
	added, addedCPU := map[string]float64{}, map[string]float64{}
	for _, a := range arms {
		s := sorted(a.lat)
		var diffs, cpuDiffs []float64
		for r := range a.roundP50 {
			diffs = append(diffs, a.roundP50[r]-none.roundP50[r])
			cpuDiffs = append(cpuDiffs, a.roundCPU[r]-none.roundCPU[r])
		}
		d, cd := sorted(diffs), sorted(cpuDiffs)
		added[a.name], addedCPU[a.name] = pct(d, 50), pct(cd, 50)
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.2f | %+.2f ms [%+.2f, %+.2f] | %.3f | %+.3f [%+.3f, %+.3f] | %.0f |\n", a.name, pct(s, 50), pct(s, 90), pct(s, 99), added[a.name], d[0], d[len(d)-1],
			pct(sorted(a.roundCPU), 50), addedCPU[a.name], cd[0], cd[len(cd)-1], float64(len(a.burst))/a.burstS)
	}
	h, w, an := added[armHandWritten], added[armWebhook], added[armAnnotated]
	hc, wc, anc := addedCPU[armHandWritten], addedCPU[armWebhook], addedCPU[armAnnotated]
	b.WriteString("\n| compiled | added to p50 | ÷ hand-written (target ≤ 1) | ÷ hand-written + annotation | ÷ webhook (target ≤ 1) | added CPU ÷ hand-written | ÷ hand-written + annotation | ÷ webhook |\n|---|---|---|---|---|---|---|---|\n")
	for _, name := range []string{armCompiled, armQuiet} {
		c, cc := added[name], addedCPU[name]
		fmt.Fprintf(&b, "| %s | %+.2f ms | **%.2f** | %.2f | **%.2f** | %.2f | %.2f | %.2f |\n", name, c, c/h, c/an, c/w, cc/hc, cc/anc, cc/wc)
	}
	b.WriteString(endMarker + "\n")
	return b.String()
}
