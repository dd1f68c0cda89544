package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// make install puts in the documentation the systemd unit points at: each
// Documentation= of the installed unit is a file under the install's
// prefix that is there, and the installed README's links to docs/ hold.
func TestInstalledUnitDocumentationExists(t *testing.T) {
	t.Parallel()
	src, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	cmd := exec.Command("make", "-s", "-C", src, "install-data", "DESTDIR="+dest, "PREFIX=/usr", "BINDIR="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install-data: %v\n%s", err, out)
	}
	unit, err := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/system/ostree-upload.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nExecStart=/usr/bin/ostree-upload receive ") {
		t.Errorf("the unit's ExecStart does not follow PREFIX:\n%s", unit)
	}
	var urls []string
	for _, line := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(line, "Documentation="); ok {
			urls = append(urls, strings.Fields(v)...)
		}
	}
	if len(urls) == 0 {
		t.Fatalf("the unit has no Documentation=:\n%s", unit)
	}
	for _, u := range urls {
		path, ok := strings.CutPrefix(u, "file:///usr/share/doc/ostree-upload/")
		if !ok {
			t.Errorf("Documentation=%s is not a file make install puts under /usr/share/doc/ostree-upload", u)
			continue
		}
		if _, err := os.Stat(filepath.Join(dest, "usr/share/doc/ostree-upload", path)); err != nil {
			t.Errorf("Documentation=%s is not installed: %v", u, err)
		}
	}
	doc := filepath.Join(dest, "usr/share/doc/ostree-upload")
	readme, err := os.ReadFile(filepath.Join(doc, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\]\((docs/[^)#]+)`).FindAllStringSubmatch(string(readme), -1) {
		if _, err := os.Stat(filepath.Join(doc, m[1])); err != nil {
			t.Errorf("the installed README links to %s, which is not installed", m[1])
		}
	}
}
