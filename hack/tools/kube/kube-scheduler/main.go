// Command kube-scheduler is the upstream kube-scheduler v1.37.1, built from
// the Go module proxy for dnstune's real-node e2e suite: the DaemonSet and
// Deployment pods of the install are scheduled the way a cluster schedules
// them.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	os.Exit(cli.Run(app.NewSchedulerCommand()))
}
