// Command kube-proxy is the upstream kube-proxy v1.37.1, built from the Go
// module proxy for dnstune's conntrack race lab (e2e/race). It is never
// shipped.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	os.Exit(cli.Run(app.NewProxyCommand()))
}
