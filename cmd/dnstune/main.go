// Command dnstune makes pod DNS on Kubernetes reliable: an admission webhook,
// a node agent, and offline tools. The command tree is in package app.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/dnstune/dnstune/cmd/dnstune/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := app.Execute(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
