// Command coredns is upstream CoreDNS with only the plugins dnstune's tests
// use, built from the Go module proxy; it is never shipped. The effect lab
// uses file, template, cache, forward, bind, prometheus and errors; the real
// node's node-local cache (e2e/kubenode), configured as NodeLocal DNSCache's
// node-cache configures its CoreDNS, also uses health, loop, reload and log.
package main

import (
	_ "github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"
)

func main() {
	coremain.Run()
}
