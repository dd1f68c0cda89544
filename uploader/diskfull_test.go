package uploader_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/uploader"
)

var (
	smallDisk = daemontest.SmallDisk
	resize    = daemontest.Resize
)

// A production repo and state dir on a full filesystem: the push fails as
// temporary, production is untouched, and the same push succeeds once
// there is room.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	disk := smallDisk(t, "12m")
	e := daemontest.New(t)
	e.Repo, e.State = filepath.Join(disk, "repo"), filepath.Join(disk, "state")
	e.Start()
	o := opts(e, e.URL, "big") // E: about 30 MB
	o.RetryTimeout = 2 * time.Second
	_, err := uploader.Push(ctx, o)
	if err == nil || !uploader.Temporary(err) {
		t.Fatalf("push onto a full disk: %v, want a temporary failure", err)
	}
	if refs := e.Refs(); len(refs) != 0 {
		t.Fatalf("refs after a push onto a full disk: %v", refs)
	}
	verifyAllObjects(t, e.Repo)
	resize(t, disk, "200m")
	o.RetryTimeout = time.Minute
	push(t, o)
	e.CheckPublished(map[string]string{"big": fx.E})
	verifyAllObjects(t, e.Repo)
}

// The repository's free-space floor (libostree's min-free-space-size) is
// kept by the daemon too: uploads that would cross it get 507, nothing
// moves, and once it is lowered the push completes without sending again
// what was kept.
func TestMinFreeSpaceRefusal(t *testing.T) {
	t.Parallel()
	disk := smallDisk(t, "100m")
	e := daemontest.New(t)
	e.Repo, e.State = filepath.Join(disk, "repo"), filepath.Join(disk, "state")
	e.Start()
	e.Stop()
	cfg := filepath.Join(e.Repo, "config")
	orig, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(orig), "[core]\n", "[core]\nmin-free-space-size=90MB\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.Start()
	o := opts(e, e.URL, "big")
	o.RetryTimeout = 2 * time.Second
	_, err = uploader.Push(ctx, o)
	if err == nil {
		t.Fatal("a push under the repository's free-space floor succeeded")
	}
	if !uploader.Temporary(err) || !strings.Contains(err.Error(), "min-free-space") {
		t.Fatalf("push under the floor: %v, want a temporary failure naming min-free-space", err)
	}
	if refs := e.Refs(); len(refs) != 0 {
		t.Fatalf("refs moved under the free-space floor: %v", refs)
	}
	e.Stop()
	if err := os.WriteFile(cfg, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	e.Start()
	o.RetryTimeout = time.Minute
	res := push(t, o)
	if res.Sent >= res.Objects {
		t.Errorf("the second push sent all %d objects: nothing of the first was kept", res.Sent)
	}
	e.CheckPublished(map[string]string{"big": fx.E})
}
