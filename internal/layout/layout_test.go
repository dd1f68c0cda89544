// Package layout holds the rules of the packages' dependencies, checked
// with go list (see docs/architecture.md).
package layout

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/ostree-upload/ostree-upload/"

func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	return strings.Fields(string(out))
}

// deps lists the module's packages pkg depends on, itself included.
func deps(t *testing.T, pkg string) []string {
	var out []string
	for _, p := range goList(t, "-deps", "-f", "{{.ImportPath}}", module+pkg) {
		if strings.HasPrefix(p, module) {
			out = append(out, strings.TrimPrefix(p, module))
		}
	}
	return out
}

// The transports know the service's interface, never its state: no
// journal, no store, no spool, no repository among their dependencies.
func TestTransportsImportNoState(t *testing.T) {
	t.Parallel()
	for _, transport := range []string{"daemon/httpapi"} {
		for _, d := range deps(t, transport) {
			if d == "journal" || d == "spool" || d == "repository" || d == "store" || strings.HasPrefix(d, "store/") {
				t.Errorf("%s depends on %s", transport, d)
			}
		}
	}
}

// The client side knows the wire types and their client, and nothing else
// of the daemon.
func TestClientImportsOnlyTheWire(t *testing.T) {
	t.Parallel()
	daemonSide := []string{"daemon", "daemon/httpapi", "repository", "service", "spool", "journal", "config", "auth"}
	for _, client := range []string{"uploader", "api/client"} {
		for _, d := range deps(t, client) {
			if slices.Contains(daemonSide, d) {
				t.Errorf("%s depends on %s", client, d)
			}
		}
	}
}

// Only store uses cgo.
func TestOnlyStoreUsesCgo(t *testing.T) {
	t.Parallel()
	for _, line := range goList(t, "-f", "{{.ImportPath}}:{{len .CgoFiles}}", module+"...") {
		pkg, n, _ := strings.Cut(strings.TrimPrefix(line, module), ":")
		if n != "0" && pkg != "store" {
			t.Errorf("%s has %s cgo files", pkg, n)
		}
	}
}

// The object model (names, verifier, GVariant, ed25519), the wire types and
// their client build without cgo.
func TestPureGoPackagesBuildWithoutCgo(t *testing.T) {
	t.Parallel()
	pkgs := []string{"store/object", "store/internal/gvariant", "api", "api/client", "auth", "config", "journal"}
	for i, p := range pkgs {
		pkgs[i] = module + p
	}
	cmd := exec.Command("go", append([]string{"build"}, pkgs...)...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
}
