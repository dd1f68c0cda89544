//go:build failpoints

package failpoint

import (
	"os"
	"syscall"
)

var armed = os.Getenv("OSTREE_UPLOAD_FAILPOINT")

// Enabled reports whether this build has failpoints.
const Enabled = true

// Hit kills the process if name is the armed failpoint.
func Hit(name string) {
	if armed == name {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}
