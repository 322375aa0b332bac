package report

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/dnstune/dnstune/policy"
)

// fullPod is a pod as the API serves it: two containers with env,
// resources, probes and mounts, managed fields and status.
func fullPod(i int, owner *appsv1.ReplicaSet) *corev1.Pod {
	ctr := func(name string) corev1.Container {
		return corev1.Container{
			Name: name, Image: "registry.example.com/team/app:1.2.3",
			Env:            []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: "two"}, {Name: "LOG_LEVEL", Value: "info"}},
			Resources:      corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}},
			VolumeMounts:   []corev1.VolumeMount{{Name: "data", MountPath: "/data"}, {Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready"}}},
		}
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("web-%05d", i), Namespace: "shop", UID: types.UID(fmt.Sprintf("pod-%d", i)),
			Labels:      map[string]string{"app": "web", "pod-template-hash": "abc123"},
			Annotations: map[string]string{"dnstune.io/profile": "resilient"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate,
				FieldsV1: metav1.NewFieldsV1(strings.Repeat("f", 1500))}},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{ctr("app"), ctr("sidecar")},
			Volumes:    []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1",
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}, {Type: corev1.ContainersReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true, Image: "x", ImageID: "sha256:0123456789abcdef"}, {Name: "sidecar", Ready: true}}},
	}
	if owner != nil {
		t := true
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: owner.Name, UID: owner.UID, Controller: &t}}
	}
	return p
}

// BenchmarkScan10000Pods: one scan of a namespace of 10,000 pods in 100
// Deployments, half of them out of date. Reads come from an in-memory
// client (as from informers); the time is the decision and grouping.
func BenchmarkScan10000Pods(b *testing.B) {
	var objs []client.Object
	objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{policy.InjectLabel: policy.InjectEnabled}}})
	tr := true
	for d := range 100 {
		dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web%d", d), Namespace: "shop", UID: types.UID(fmt.Sprintf("dep-%d", d))}}
		rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web%d-abc", d), Namespace: "shop", UID: types.UID(fmt.Sprintf("rs-%d", d)),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: dep.Name, UID: dep.UID, Controller: &tr}}}}
		rs.Spec.Template.Spec.Containers = []corev1.Container{{Name: "app", Image: "x"}}
		objs = append(objs, dep, rs)
		for i := range 100 {
			p := fullPod(d*100+i, rs)
			if i%2 == 0 {
				d := policy.Decide(p, policy.Namespace{Name: "shop", Labels: map[string]string{policy.InjectLabel: policy.InjectEnabled}}, policy.Default(), kubeDNS)
				d.Apply(&p.Annotations, &p.Spec)
			}
			objs = append(objs, stripPod(p))
		}
	}
	c := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(objs...).Build()
	pol := policy.Default()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		ws, err := Scan(context.Background(), Options{Client: c, Policy: pol, ClusterDNS: kubeDNS})
		if err != nil || len(ws) != 100 || ws[0].OutOfDate != 50 {
			b.Fatalf("scan: %v, %d workloads", err, len(ws))
		}
	}
}

// BenchmarkCacheMemory10000Pods reports the heap that 10,000 pods hold as
// the report informers keep them (stripped) and as served in full.
func BenchmarkCacheMemory10000Pods(b *testing.B) {
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for b.Loop() {
		before := heap()
		full := make([]*corev1.Pod, 10000)
		for i := range full {
			full[i] = fullPod(i, nil)
		}
		fullBytes := heap() - before
		stripped := make([]any, len(full))
		for i, p := range full {
			stripped[i] = stripPod(p.DeepCopy())
		}
		full = nil
		after := heap() - before
		runtime.KeepAlive(full)
		runtime.KeepAlive(stripped)
		b.ReportMetric(float64(fullBytes)/10000, "B/pod-full")
		b.ReportMetric(float64(after)/10000, "B/pod-stripped")
		b.ReportMetric(float64(after)/(1<<20), "MiB-10k-stripped")
	}
}
