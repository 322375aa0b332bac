package main

import "github.com/invopop/jsonschema"

// Values are the chart's values (manifests/dnstune/values.yaml, which documents
// each): the schema refuses unknown keys and wrong types, and its policy part
// is the policy API's own schema.
type Values struct {
	Image            Image           `json:"image"`
	Backend          string          `json:"backend" jsonschema:"enum=webhook,enum=admission-policy"`
	AdmissionPolicy  AdmissionPolicy `json:"admissionPolicy"`
	Namespace        Namespace       `json:"namespace"`
	Webhook          Webhook         `json:"webhook"`
	Certificates     Certificates    `json:"certificates"`
	Node             Node            `json:"node"`
	Reports          Reports         `json:"reports"`
	NetworkPolicy    Toggle          `json:"networkPolicy"`
	ServiceMonitor   ServiceMonitor  `json:"serviceMonitor"`
	PrometheusRule   Labelled        `json:"prometheusRule"`
	GrafanaDashboard Labelled        `json:"grafanaDashboard"`
	Policy           map[string]any  `json:"policy"`
}

// AdmissionPolicy configures the admission-policy backend.
type AdmissionPolicy struct {
	EnforcedWarnings bool `json:"enforcedWarnings"`
}

// Image is dnstune's image.
type Image struct {
	Repository string `json:"repository" jsonschema:"minLength=1"`
	Tag        string `json:"tag"` // empty: the chart's appVersion
	PullPolicy string `json:"pullPolicy" jsonschema:"enum=,enum=Always,enum=IfNotPresent,enum=Never"`
}

// Namespace says whether the chart renders its namespace.
type Namespace struct {
	Create bool `json:"create"`
}

// Webhook is the Deployment (the webhook, or the admission-policy syncer)
// and its webhook configuration.
type Webhook struct {
	Replicas          int               `json:"replicas" jsonschema:"minimum=1"`
	FailurePolicy     string            `json:"failurePolicy" jsonschema:"enum=Ignore,enum=Fail"`
	TimeoutSeconds    int               `json:"timeoutSeconds" jsonschema:"minimum=1,maximum=30"`
	Resources         map[string]any    `json:"resources"`
	PriorityClassName string            `json:"priorityClassName"`
	NodeSelector      map[string]string `json:"nodeSelector"`
	Tolerations       []map[string]any  `json:"tolerations"`
	ExtraArgs         []string          `json:"extraArgs"`
	PDB               PDB               `json:"pdb"`
}

// PDB is the webhook's PodDisruptionBudget.
type PDB struct {
	Enabled      bool `json:"enabled"`
	MinAvailable int  `json:"minAvailable" jsonschema:"minimum=0"`
}

// Certificates says who makes the webhook's serving certificate.
type Certificates struct {
	Mode string `json:"mode" jsonschema:"enum=self-managed,enum=cert-manager"`
}

// Node is the node agent DaemonSet.
type Node struct {
	Enabled           bool              `json:"enabled"`
	GCThresh          []int             `json:"gcThresh" jsonschema:"minItems=3,maxItems=3"`
	AutoRaise         AutoRaise         `json:"autoRaise"`
	NodeLocalProbe    NodeLocalProbe    `json:"nodeLocalProbe"`
	NodeLocalCover    NodeLocalCover    `json:"nodeLocalCover"`
	Resources         map[string]any    `json:"resources"`
	PriorityClassName string            `json:"priorityClassName"`
	NodeSelector      map[string]string `json:"nodeSelector"`
	Tolerations       []map[string]any  `json:"tolerations"`
}

// AutoRaise is the monitor's --auto-raise.
type AutoRaise struct {
	Enabled      bool `json:"enabled"`
	MaxGCThresh3 int  `json:"maxGcThresh3" jsonschema:"minimum=1,maximum=2147483647"`
}

// NodeLocalProbe is the monitor's DNS probe of the node-local cache
// (--nodelocal-address, the policy's nodeLocalDNS).
type NodeLocalProbe struct {
	Enabled  bool   `json:"enabled"`
	Interval string `json:"interval" jsonschema:"pattern=^[0-9]+(ms|s|m)$"`
	Timeout  string `json:"timeout" jsonschema:"pattern=^[0-9]+(ms|s)$"`
	// WellKnown probes the platforms' node-local addresses too.
	WellKnown bool `json:"wellKnown"`
}

// NodeLocalCover is the monitor's cover for the node-local cache
// (--nodelocal-cover, --nodelocal-upstream): Services as namespace/name, or
// addresses as host:port.
type NodeLocalCover struct {
	Enabled  bool     `json:"enabled"`
	Upstream []string `json:"upstream" jsonschema:"minItems=1,pattern=^([a-z0-9-]+/[a-z0-9-]+|[0-9.]+:[0-9]+|\\[[0-9a-fA-F:]+\\]:[0-9]+)$"`
}

// Reports are the PolicyReport CRD and RBAC.
type Reports struct {
	Enabled bool `json:"enabled"`
	CRD     bool `json:"crd"`
}

// Toggle is an on/off switch.
type Toggle struct {
	Enabled bool `json:"enabled"`
}

// ServiceMonitor is the Prometheus Operator ServiceMonitor.
type ServiceMonitor struct {
	Enabled  bool              `json:"enabled"`
	Interval string            `json:"interval" jsonschema:"pattern=^[0-9]+(ms|s|m|h)$"`
	Labels   map[string]string `json:"labels"`
}

// Labelled is an on/off switch with labels for the object it renders.
type Labelled struct {
	Enabled bool              `json:"enabled"`
	Labels  map[string]string `json:"labels"`
}

// valuesSchema is the chart's values schema, with the policy schema in place.
func valuesSchema(policy *jsonschema.Schema) *jsonschema.Schema {
	r := &jsonschema.Reflector{DoNotReference: true, RequiredFromJSONSchemaTags: true}
	s := r.Reflect(&Values{})
	s.ID = "https://dnstune.io/schemas/chart-values.json"
	s.Title = "dnstune Helm chart values"
	p := *policy
	p.Version, p.ID, p.Title = "", "", ""
	p.Description = "Policy is dnstune's policy (api/v1alpha1), rendered into the dnstune-policy ConfigMap."
	s.Properties.Set("policy", &p)
	gc, _ := s.Properties.Get("node")
	if g, ok := gc.Properties.Get("gcThresh"); ok {
		g.Items = &jsonschema.Schema{Type: "integer", Minimum: "1", Maximum: "2147483647"}
	}
	return s
}
