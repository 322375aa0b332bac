package report

import (
	"context"
	"fmt"
	"io"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// RestartedAtAnnotation is the pod-template annotation kubectl rollout
// restart sets; changing it makes the controller replace every pod.
const RestartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"

// RolloutOptions configure Rollout. Zero values take the defaults stated.
type RolloutOptions struct {
	Client client.Client
	// DryRun prints the plan and changes nothing.
	DryRun bool
	// Timeout for one workload to become available again, default 10m.
	Timeout time.Duration
	// Poll interval while waiting, default 2s.
	Poll time.Duration
	Out  io.Writer
	Now  func() time.Time
}

// Rollout restarts, one at a time, each workload with out-of-date pods
// that a restart fixes (Deployment, StatefulSet, DaemonSet), the way
// kubectl rollout restart does, and waits until it is fully rolled out and
// available before the next: the controllers' own rolling update replaces
// pods, so nothing is deleted or evicted by dnstune and availability rules
// hold. Bare pods, Jobs, StatefulSets with updateStrategy OnDelete and
// workloads whose template pins dnsPolicy None are listed, never touched;
// so are workloads of audit namespaces (audit changes no pod, so a
// restart would leave them out of date).
func Rollout(ctx context.Context, ws []Workload, o RolloutOptions) error {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Poll <= 0 {
		o.Poll = 2 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	for _, w := range ws {
		if w.OutOfDate == 0 {
			continue
		}
		ref := fmt.Sprintf("%s %s/%s (%d out of date)", w.Kind, w.Namespace, w.Name, w.OutOfDate)
		switch {
		case w.Audit:
			_, _ = fmt.Fprintf(o.Out, "skip     %s: its namespace is in audit (dnstune.io/inject=audit): new pods are not changed, so a restart changes nothing; enforce it first (dnstune.io/inject=enabled)\n", ref)
			continue
		case w.PinsDNSPolicyNone:
			_, _ = fmt.Fprintf(o.Out, "skip     %s: its template pins dnsPolicy None; dnstune leaves its DNS to it\n", ref)
			continue
		case w.Kind == "Pod":
			_, _ = fmt.Fprintf(o.Out, "manual   %s: a bare pod; recreate it to get %s (dnstune never deletes pods)\n", ref, w.Change)
			continue
		case w.OnDelete:
			_, _ = fmt.Fprintf(o.Out, "manual   %s: a StatefulSet with updateStrategy OnDelete: a restart replaces no pod; delete its pods one at a time to get %s\n", ref, w.Change)
			continue
		case w.Kind != "Deployment" && w.Kind != "StatefulSet" && w.Kind != "DaemonSet":
			_, _ = fmt.Fprintf(o.Out, "manual   %s: can't be restarted in place; its next pods get the settings (Jobs: the next run)\n", ref)
			continue
		}
		if o.DryRun {
			_, _ = fmt.Fprintf(o.Out, "restart  %s: %s (dry run: run with --dry-run=false)\n", ref, w.Change)
			continue
		}
		_, _ = fmt.Fprintf(o.Out, "restart  %s: %s\n", ref, w.Change)
		if err := restart(ctx, o, w); err != nil {
			return err
		}
		if err := waitRolledOut(ctx, o, w); err != nil {
			return err
		}
		_, _ = fmt.Fprintf(o.Out, "done     %s %s/%s is available\n", w.Kind, w.Namespace, w.Name)
	}
	return nil
}

func object(w Workload) client.Object {
	switch w.Kind {
	case "Deployment":
		return &appsv1.Deployment{}
	case "StatefulSet":
		return &appsv1.StatefulSet{}
	}
	return &appsv1.DaemonSet{}
}

func restart(ctx context.Context, o RolloutOptions, w Workload) error {
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{%q:%q}}}}}`, RestartedAtAnnotation, o.Now().Format(time.RFC3339))
	obj := object(w)
	obj.SetNamespace(w.Namespace)
	obj.SetName(w.Name)
	if err := o.Client.Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		return fmt.Errorf("failed to restart %s %s/%s: %w", w.Kind, w.Namespace, w.Name, err)
	}
	return nil
}

// waitRolledOut waits until the controller has seen the change and every
// replica is updated and available, as kubectl rollout status does.
func waitRolledOut(ctx context.Context, o RolloutOptions, w Workload) error {
	key := client.ObjectKey{Namespace: w.Namespace, Name: w.Name}
	err := wait.PollUntilContextTimeout(ctx, o.Poll, o.Timeout, true, func(ctx context.Context) (bool, error) {
		obj := object(w)
		if err := o.Client.Get(ctx, key, obj); err != nil {
			return false, err
		}
		return rolledOut(obj), nil
	})
	if err != nil {
		return fmt.Errorf("%s %s/%s did not finish rolling out within %s (stopping; the rest are not restarted): %w", w.Kind, w.Namespace, w.Name, o.Timeout, err)
	}
	return nil
}

// rolledOut is kubectl rollout status's test for each kind.
func rolledOut(obj client.Object) bool {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		want := int32(1)
		if o.Spec.Replicas != nil {
			want = *o.Spec.Replicas
		}
		s := o.Status
		return s.ObservedGeneration >= o.Generation && s.UpdatedReplicas == want && s.Replicas == want && s.AvailableReplicas == want
	case *appsv1.StatefulSet:
		want := int32(1)
		if o.Spec.Replicas != nil {
			want = *o.Spec.Replicas
		}
		s := o.Status
		return s.ObservedGeneration >= o.Generation && s.UpdatedReplicas == want && s.ReadyReplicas == want && s.CurrentRevision == s.UpdateRevision
	case *appsv1.DaemonSet:
		s := o.Status
		return s.ObservedGeneration >= o.Generation && s.UpdatedNumberScheduled == s.DesiredNumberScheduled && s.NumberAvailable == s.DesiredNumberScheduled
	}
	return false
}
