// Command kube-apiserver is the upstream kube-apiserver v1.35.4, built from
// the Go module proxy for dnstune's e2e suite. It is never shipped.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
