// Command kubelet is the upstream kubelet v1.37.1, built from the Go module
// proxy for dnstune's real-node e2e suite (../shared/NODE.md).
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	os.Exit(cli.Run(app.NewKubeletCommand(context.Background())))
}
