package framework

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNetNS runs f on a thread switched into the network namespace at path
// (/run/netns/NAME, /proc/PID/ns/net), then switches the thread back.
// Sockets f makes stay in that namespace after it returns: dial in f, use
// the connection anywhere. Needs root (CAP_SYS_ADMIN).
func InNetNS(path string, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return err
	}
	defer func() { _ = self.Close() }()
	target, err := os.Open(path) // #nosec G304 -- a namespace the caller names
	if err != nil {
		return err
	}
	defer func() { _ = target.Close() }()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", path, err)
	}
	ferr := f()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread must not go back to the pool in the wrong namespace.
		panic(fmt.Sprintf("setns back from %s: %v", path, err))
	}
	return ferr
}
