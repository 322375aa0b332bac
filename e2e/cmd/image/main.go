// Command image builds dnstune's container image without a Docker engine
// (e2e/image) and writes it as a docker-format tarball: make image.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/dnstune/dnstune/e2e/image"
)

func main() {
	bin := flag.String("binary", "bin/dnstune", "the static dnstune binary (make build)")
	out := flag.String("o", "bin/dnstune-image.tar", "the tarball to write")
	ref := flag.String("tag", "ghcr.io/dnstune/dnstune:dev", "the image reference the tarball carries")
	version := flag.String("version", "dev", "the version the binary was stamped with (its OCI label)")
	flag.Parse()
	img, err := image.Build(*bin, *version)
	if err == nil {
		err = image.WriteTarball(*out, *ref, img)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	d, _ := img.Digest()
	fmt.Printf("%s %s %s\n", *out, *ref, d)
}
