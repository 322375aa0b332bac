// Command kube-controller-manager is the upstream kube-controller-manager
// v1.37.1, built from the Go module proxy for dnstune's e2e suite.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
