// Command genschema writes the JSON Schema of the policy API
// (api/v1alpha1.Policy) to standard output, with the types' doc comments as
// descriptions; with -values, the Helm chart's values schema, whose policy
// part is that schema. make generate runs it; make test fails when a
// committed schema is stale.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/invopop/jsonschema"

	"github.com/dnstune/dnstune/api/v1alpha1"
)

func main() {
	values := flag.Bool("values", false, "write the Helm chart's values schema (manifests/dnstune/values.schema.json) instead")
	flag.Parse()
	r := &jsonschema.Reflector{DoNotReference: true}
	if err := r.AddGoComments("github.com/dnstune/dnstune", "./api/v1alpha1"); err != nil {
		fmt.Fprintln(os.Stderr, "genschema: reading the API's doc comments (run from the repository root):", err)
		os.Exit(1)
	}
	s := r.Reflect(&v1alpha1.Policy{})
	s.ID = "https://dnstune.io/schemas/policy.v1alpha1.json"
	s.Title = "dnstune Policy (dnstune.io/v1alpha1)"
	if *values {
		s = valuesSchema(s)
	}
	out, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		fmt.Fprintln(os.Stderr, "genschema:", err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}
