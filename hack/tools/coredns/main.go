// Command coredns is upstream CoreDNS with only the plugins dnstune's effect
// lab uses (file, template, cache, forward, bind, prometheus, errors),
// built from the Go module proxy. It is never shipped.
package main

import (
	_ "github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/template"
)

func main() {
	coremain.Run()
}
