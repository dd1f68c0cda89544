package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFind(t *testing.T) {
	home, etc := noDefaultKeyrings(t)
	t.Chdir(t.TempDir())
	t.Setenv("OSTREE_UPLOAD_CONF", "")
	t.Setenv("OSTREE_RECEIVE_CONF", "")
	find := func() string {
		t.Helper()
		p, err := Find()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := find(); p != DefaultFile {
		t.Errorf("nothing: %q", p)
	}
	// From the last to the first: each one found wins over the ones before.
	order := []struct{ env, path string }{
		{path: filepath.Join(etc, "ostree/ostree-receive.conf")},
		{path: filepath.Join(home, ".config/ostree/ostree-receive.conf")},
		{env: "OSTREE_RECEIVE_CONF", path: filepath.Join(t.TempDir(), "receive.conf")},
		{path: filepath.Join(etc, "ostree-upload/ostree-upload.yaml")},
		{path: filepath.Join(home, ".config/ostree-upload/ostree-upload.yaml")},
		{env: "OSTREE_UPLOAD_CONF", path: filepath.Join(t.TempDir(), "upload.yaml")},
		{path: DefaultFile},
	}
	for _, o := range order {
		touch(t, o.path)
		if o.env != "" {
			t.Setenv(o.env, o.path)
		}
		if p := find(); p != o.path {
			t.Errorf("found %q, want %q", p, o.path)
		}
	}
	// A variable naming nothing is an error when it is reached.
	os.Remove(DefaultFile)
	t.Setenv("OSTREE_UPLOAD_CONF", "/nonexistent/upload.yaml")
	if _, err := Find(); err == nil || !strings.Contains(err.Error(), "$OSTREE_UPLOAD_CONF") || !strings.Contains(err.Error(), "/nonexistent/upload.yaml") {
		t.Errorf("missing $OSTREE_UPLOAD_CONF: %v", err)
	}
	t.Setenv("OSTREE_UPLOAD_CONF", "")
	for _, o := range order[1:6] {
		os.Remove(o.path)
	}
	t.Setenv("OSTREE_RECEIVE_CONF", "/nonexistent/receive.conf")
	if _, err := Find(); err == nil || !strings.Contains(err.Error(), "$OSTREE_RECEIVE_CONF") {
		t.Errorf("missing $OSTREE_RECEIVE_CONF: %v", err)
	}
	t.Setenv("OSTREE_RECEIVE_CONF", "")
	if p := find(); p != order[0].path {
		t.Errorf("found %q, want %q", p, order[0].path)
	}
}
