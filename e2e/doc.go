// Package e2e proves dnstune on a real control plane: etcd, kube-apiserver
// and kube-controller-manager v1.37 built from source (make e2e-tools),
// calling the real dnstune binary over TLS through the
// MutatingWebhookConfiguration rendered from the chart (manifests/dnstune),
// pointed at the local process. The real node (the install as a user does
// it, with dnstune's own image) is e2e/kubenode.
//
// Where things go:
//
//   - framework/: starting and stopping the control plane and webhook
//     processes, rendering and applying manifests, scraping metrics. No test
//     logic; nothing here asserts.
//   - main_test.go: TestMain, the shared env, and the policy the suite runs
//     (the shipped one: the chart's values, as manifests/install.yaml has it).
//   - helpers_test.go: small helpers every scenario uses (namespace, newPod,
//     create, assertMutated, assertUntouched, metric, eventually).
//   - scenarios_test.go: what a user sees for one pod or workload in one
//     namespace (numbered scenarios of DESIGN.md). A new admission
//     behaviour's scenario goes here, in a Test function of its own that
//     creates its own namespace with namespace(t, ...).
//   - lifecycle_test.go: the webhook process itself: down, failure policy,
//     policy reload, certificate rotation. A scenario that stops, restarts
//     or reconfigures the shared webhook goes here and must restore it.
//   - validation_test.go: what kube-apiserver accepts (server-side dry run).
//   - install_test.go: the rendered install files, RBAC, certificates.
//   - node_test.go: the node agent against the apiserver.
//   - relabel_test.go: reinvocation with another mutating webhook.
//   - lab/ and bench/: the effect lab (make lab) and the load harness
//     (make bench), with their reduced forms run by make test.
package e2e
