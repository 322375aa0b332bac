# dnstune — `make help` lists the targets.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := help

BIN         := $(CURDIR)/bin
GOLANGCI_VERSION := v2.15.0
GOLANGCI    := $(BIN)/golangci-lint-$(GOLANGCI_VERSION)
GO_TEST_FLAGS ?=

.PHONY: help
help: ## List the documented targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The version stamped into the binary and the image: the chart's appVersion.
VERSION ?= $(shell awk '/^appVersion:/{gsub(/"/, "", $$2); print $$2}' manifests/dnstune/Chart.yaml)
LDFLAGS := -s -w -X github.com/dnstune/dnstune/cmd/dnstune/app.Version=$(VERSION)

.PHONY: build
build: ## Build bin/dnstune (static, version-stamped; the same flags as the Dockerfile).
	CGO_ENABLED=0 GOWORK=off go build -trimpath -buildvcs=false -ldflags "$(LDFLAGS)" -o $(BIN)/dnstune ./cmd/dnstune

.PHONY: test
test: verify-generate verify-manifests test-unit e2e ## Run every test: unit (with fuzz seed corpora) and e2e on a real control plane.

.PHONY: generate
generate: ## Write the JSON Schemas from the API types: api/v1alpha1/policy.schema.json and the chart's values.schema.json.
	go run ./hack/genschema > api/v1alpha1/policy.schema.json
	go run ./hack/genschema -values > manifests/dnstune/values.schema.json

.PHONY: verify-generate
verify-generate: ## Fail when generated files are stale (run make generate).
	@go run ./hack/genschema | diff -u api/v1alpha1/policy.schema.json - > /dev/null || \
	  { echo "api/v1alpha1/policy.schema.json is stale: run make generate and commit"; exit 1; }
	@go run ./hack/genschema -values | diff -u manifests/dnstune/values.schema.json - > /dev/null || \
	  { echo "manifests/dnstune/values.schema.json is stale: run make generate and commit"; exit 1; }; echo "generated files are up to date"

HELM_VERSION := $(shell awk '/helm.sh\/helm\/v3 v/{print $$NF}' hack/tools/helm/go.mod)
HELM        := $(BIN)/tools/helm-$(HELM_VERSION)/helm
PROM_VERSION := $(shell awk '/github.com\/prometheus\/prometheus v/{print $$NF}' hack/tools/prometheus/go.mod)
PROMTOOL    := $(BIN)/tools/promtool-$(PROM_VERSION)/promtool

$(HELM):
	bash hack/build-tools.sh helm
$(PROMTOOL):
	bash hack/build-tools.sh promtool

.PHONY: chart-tools
chart-tools: $(HELM) $(PROMTOOL) ## Build helm and promtool from the Go module proxy (cached in bin/tools).

.PHONY: manifests
manifests: $(HELM) ## Render manifests/ from the chart: install.yaml (self-managed certs), install-cert-manager.yaml, install-admission-policy.yaml, reports.yaml.
	bash hack/render-manifests.sh $(HELM) manifests

.PHONY: verify-manifests
verify-manifests: $(HELM) ## Fail when manifests/ is stale (run make manifests).
	@tmp=$$(mktemp -d) && bash hack/render-manifests.sh $(HELM) $$tmp && \
	for f in $$tmp/*.yaml; do diff -u manifests/$$(basename $$f) $$f > /dev/null || \
	  { echo "manifests/$$(basename $$f) is stale: run make manifests and commit"; rm -rf $$tmp; exit 1; }; done; \
	rm -rf $$tmp; echo "manifests/ is up to date"

.PHONY: test-unit
test-unit: chart-tools ## Unit tests, golden files, fuzz seed corpora, the chart (helm lint, renders, alert rules), benchmarks compiled (not timed).
	HELM=$(HELM) PROMTOOL=$(PROMTOOL) go test $(GO_TEST_FLAGS) -tags chart -count=1 -race ./... ./e2e/chart
	go test -count=1 -run '^$$' -bench . -benchtime 1x ./... > /dev/null

.PHONY: e2e-tools
e2e-tools: ## Build kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and etcd from the Go module proxy (cached outside the clone; bin/tools links them): the control plane of the suite and the demo.
	bash hack/build-tools.sh

# The version matrix: the newest patch of each minor, built from
# hack/tools/apiserver-<minor> (hack/new-apiserver-module.sh writes one).
# The webhook is tested on every one; the compiled admission-policy backend
# from 1.36 (MutatingAdmissionPolicy v1). docs/docs_test.go holds the
# chart's kubeVersion, README and docs/install.md to these lists.
MATRIX_MINORS   := 1.33 1.34 1.35 1.36 1.37
COMPILED_MINORS := 1.36 1.37

.PHONY: matrix-tools
matrix-tools: ## Build the version matrix's kube-apiservers (cached outside the clone, like e2e-tools).
	@for m in $(MATRIX_MINORS); do bash hack/build-tools.sh apiserver-$$m || exit 1; done

.PHONY: lab-deps
lab-deps: ## What the effect and race labs need: CoreDNS (built), nftables and iptables (installed when root and missing).
	bash hack/build-tools.sh coredns
	@if [ "$$(id -u)" = 0 ] && ! { command -v nft && command -v iptables; } > /dev/null; then \
	  echo "installing nftables and iptables for the labs"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables iptables > /dev/null; fi

NODE_PKGS := containerd runc containernetworking-plugins musl-tools conntrack ipset

.PHONY: node-deps
node-deps: ## What the real-node e2e needs (root): containerd, runc, the CNI plugins and musl-gcc, from Debian packages when missing.
	@if [ "$$(id -u)" != 0 ]; then echo "node-deps: not root, nothing installed (the real-node e2e will skip and say why)"; exit 0; fi; \
	missing=; for p in $(NODE_PKGS); do dpkg -s $$p > /dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing for the real-node e2e"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing > /dev/null; fi

# What each apiserver of the matrix runs besides v1.37.1 (everything, above):
# the webhook's install, admission scenarios, audit warnings, NetworkPolicy
# detection, report and rollout, the dry run of every values set, and the
# backend floor; from 1.36 the compiled backend's differential too.
E2E_WEBHOOK_MATRIX  := TestInstall|TestOptedInNamespace|TestDeploymentPods|TestNodeLocalProfile|TestAuditNamespace|TestDNSPolicies|TestDecisionsPassAPIServerValidation|TestNodeLocalNetworkPolicy|TestReportAndRollout|TestReportAndRolloutEdges|TestRendersAndCompiledOutputsPassDryRun|TestAdmissionPolicyBackendFloor
E2E_COMPILED_MATRIX := TestCompiledAdmissionPolicyMatchesWebhook|TestCompiledAdmissionPolicyRandomCases|TestCompiledPolicyExclusions|TestCompiledWarningsMatchWebhook|TestAdmissionPolicyBackend
E2E_FILTER := grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|kubenode:|\s+\S+_test.go)'

.PHONY: proxy-tools
proxy-tools: ## Build kube-proxy v1.37.1 (tool cache): the real node's Services and the race lab's DNAT.
	bash hack/build-tools.sh kube-proxy

.PHONY: enforcer-tools
enforcer-tools: ## Build kube-router (tool cache): the real node's NetworkPolicy enforcer (only its firewall runs).
	bash hack/build-tools.sh kube-router

.PHONY: certmanager-tools
certmanager-tools: ## Build the cert-manager stand-in (tool cache): its controllers and CA injector from the cert-manager module.
	bash hack/build-tools.sh cert-manager

# The real node runs once per kube-proxy mode.
PROXY_MODES := iptables nftables

.PHONY: e2e
e2e: e2e-tools matrix-tools proxy-tools enforcer-tools certmanager-tools chart-tools lab-deps node-deps ## E2E suite: real control plane calling the real webhook over TLS; the version matrix; reduced effect lab and the real node (root), under kube-proxy in iptables and in nftables mode.
	HELM=$(HELM) KUBEBUILDER_ASSETS=$(BIN)/tools/current go test $(GO_TEST_FLAGS) -tags e2e -count=1 -v -timeout 30m $$(go list ./e2e/... | grep -v /kubenode) 2>&1 | tee $(BIN)/e2e.log | $(E2E_FILTER) ; exit $${PIPESTATUS[0]}
	@for m in $(MATRIX_MINORS); do v=$$(awk '/k8s.io\/kubernetes v/{print $$NF; exit}' hack/tools/apiserver-$$m/go.mod); \
	  api=$(BIN)/tools/kube-apiserver-$$v/kube-apiserver; tests='$(E2E_WEBHOOK_MATRIX)'; \
	  case " $(COMPILED_MINORS) " in *" $$m "*) tests="$$tests|$(E2E_COMPILED_MATRIX)";; esac; \
	  echo "--- version matrix: kube-apiserver $$v"; \
	  DNSTUNE_KUBE_APISERVER=$$api HELM=$(HELM) KUBEBUILDER_ASSETS=$(BIN)/tools/current go test $(GO_TEST_FLAGS) -tags e2e -count=1 -v -timeout 20m -run "^($$tests)\$$" ./e2e 2>&1 | tee $(BIN)/e2e-$$v.log | $(E2E_FILTER) ; \
	  [ $${PIPESTATUS[0]} = 0 ] || exit 1; done
	@# The real node runs alone: it checks the host is left exactly as found,
	@# and the lab's namespaces and nft tables must not be there meanwhile.
	@$(MAKE) --no-print-directory e2e-node-run

.PHONY: e2e-node
e2e-node: e2e-tools proxy-tools enforcer-tools certmanager-tools chart-tools lab-deps node-deps ## Only the real-node e2e (root): manifests/install.yaml on a kubelet + containerd node with kube-proxy (iptables, then nftables mode), resolv.conf from running pods.
	@$(MAKE) --no-print-directory e2e-node-run

.PHONY: e2e-node-run
e2e-node-run:
	@for mode in $(PROXY_MODES); do echo "--- real node: kube-proxy in $$mode mode"; \
	  DNSTUNE_PROXY_MODE=$$mode HELM=$(HELM) KUBEBUILDER_ASSETS=$(BIN)/tools/current go test $(GO_TEST_FLAGS) -tags e2e -count=1 -v -timeout 20m ./e2e/kubenode 2>&1 | tee $(BIN)/e2e-node-$$mode.log | $(E2E_FILTER) ; \
	  [ $${PIPESTATUS[0]} = 0 ] || exit 1; done

.PHONY: demo
demo: e2e-tools proxy-tools lab-deps node-deps ## Show what dnstune does: as root on a real node from manifests/install.yaml (else the webhook as a process); DEMO_KEEP=1 keeps it running.
	KUBEBUILDER_ASSETS=$(BIN)/tools/current go run ./e2e/demo

.PHONY: lab
lab: lab-deps ## Effect lab (root): real CoreDNS + glibc in network namespaces, plain vs dnstune pods, with loss; writes EFFECT.md.
	@test "$$(id -u)" = 0 || { echo "make lab needs root (network namespaces, nft)"; exit 1; }
	go run ./e2e/lab/cmd -coredns "$$(bash hack/build-tools.sh coredns | tail -1)"

.PHONY: race-lab
race-lab: e2e-tools proxy-tools lab-deps ## The 5-second race on this kernel (root): real kube-proxy (iptables, nftables) DNATing to three CoreDNS; writes EFFECT.md's race section.
	@test "$$(id -u)" = 0 || { echo "make race-lab needs root (network namespaces)"; exit 1; }
	KUBEBUILDER_ASSETS=$(BIN)/tools/current go run ./e2e/lab/racecmd -coredns "$$(bash hack/build-tools.sh coredns | tail -1)" -kube-proxy "$$(bash hack/build-tools.sh kube-proxy | tail -1)"

.PHONY: bench
bench: e2e-tools chart-tools ## Go benchmarks + load harness (floor / reference / dnstune) + apiserver pod-create latency + backends side by side + the seeds' scale (30,000 pods, 2,000 namespaces); writes BENCHMARKS.md.
	go test -run '^$$' -bench . -benchmem -count 6 ./policy ./webhook | tee $(BIN)/gobench.txt
	KUBEBUILDER_ASSETS=$(BIN)/tools/current go run ./e2e/bench -gobench $(BIN)/gobench.txt
	KUBEBUILDER_ASSETS=$(BIN)/tools/current go run ./e2e/bench/backends
	@# The node agent with the seeds' 30,000 neighbour entries in the real kernel (root; quoted by the scale section).
	go test -run '^$$' -bench ScrapeAt30kNeighbours -benchtime 200x ./node | tee $(BIN)/nodebench.txt
	KUBEBUILDER_ASSETS=$(BIN)/tools/current go run ./e2e/bench/scale

.PHONY: update-golden
update-golden: $(HELM) ## Rewrite every golden file from the current output (offline CLI, policy check, the chart's renders).
	go test ./internal/offline/... -run Golden -update
	go test ./cmd/dnstune/app -run PolicyCheckFixtures -update-check
	HELM=$(HELM) go test -tags chart ./e2e/chart -run GoldenRenders -update

IMAGE ?= ghcr.io/dnstune/dnstune:dev

.PHONY: image
image: build ## Build the image without a Docker engine: bin/dnstune-image.tar (docker format; ctr/docker/podman load it).
	go run ./e2e/cmd/image -binary $(BIN)/dnstune -o $(BIN)/dnstune-image.tar -tag $(IMAGE) -version $(VERSION)

.PHONY: docker-image
docker-image: ## Build the image with a Docker engine from the Dockerfile (the same binary path, user and entrypoint).
	@docker info > /dev/null 2>&1 || { echo "make docker-image: no Docker engine reachable (docker info failed); use make image"; exit 1; }
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .

.PHONY: fmt
fmt: ## gofmt every Go file.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## go vet, both modules (the shipped one and e2e/), with the e2e and chart tests (build tags e2e, chart).
	go vet -tags e2e,chart ./... ./e2e/...

$(GOLANGCI):
	GOBIN=$(BIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	mv $(BIN)/golangci-lint $(GOLANGCI)

.PHONY: lint
lint: $(GOLANGCI) ## gofmt check, go vet (make vet) and golangci-lint (.golangci.yml), both modules.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "run: make fmt"; exit 1; }
	@$(MAKE) --no-print-directory vet
	$(GOLANGCI) run ./...
	cd e2e && $(GOLANGCI) run ./...
