// Command client resolves names through glibc's getaddrinfo (cgo, AF_UNSPEC:
// A and AAAA go out together), as an application in a pod does, and prints
// one JSON line per lookup: {"name":..., "ms":..., "err":...}. It reads the
// /etc/resolv.conf of where it runs (the lab runs it with ip netns exec).
package main

/*
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netdb.h>

static int lookup(const char *name) {
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	int rc = getaddrinfo(name, NULL, &hints, &res);
	if (res) freeaddrinfo(res);
	return rc;
}
*/
import "C"

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
	"unsafe"
)

type result struct {
	Name string  `json:"name"`
	MS   float64 `json:"ms"`
	Err  string  `json:"err,omitempty"`
}

func main() {
	names := flag.String("names", "", "comma-separated names to resolve")
	n := flag.Int("n", 100, "lookups per name")
	parallel := flag.Int("parallel", 100, "lookups in flight at once")
	flag.Parse()
	if *names == "" {
		fmt.Fprintln(os.Stderr, "client: -names is required")
		os.Exit(2)
	}
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, *parallel)
		enc = json.NewEncoder(os.Stdout)
	)
	for _, name := range strings.Split(*names, ",") {
		for range *n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				cname := C.CString(name)
				start := time.Now()
				rc := C.lookup(cname)
				ms := float64(time.Since(start).Microseconds()) / 1000
				C.free(unsafe.Pointer(cname))
				r := result{Name: name, MS: ms}
				if rc != 0 {
					r.Err = C.GoString(C.gai_strerror(rc))
				}
				mu.Lock()
				_ = enc.Encode(r)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
}
