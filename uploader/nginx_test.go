package uploader_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store/storetest"
)

// startNginx runs nginx with docs/examples/nginx.conf as its site, turned
// towards this test's daemon, certificate and repository, and returns the
// address it listens on.
func startNginx(t *testing.T, upstream, certFile, keyFile, repo string) string {
	t.Helper()
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		if nginx, err = exec.LookPath("/usr/sbin/nginx"); err != nil {
			t.Fatal("nginx is missing: make deps installs it (Debian package nginx-light)")
		}
	}
	example, err := os.ReadFile("../docs/examples/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	site := string(example)
	for _, r := range [][2]string{
		{"listen 443 ssl;", "listen " + addr + " ssl;"},
		{"server 127.0.0.1:8080;", "server " + upstream + ";"},
		{"/etc/ssl/certs/ostree.example.com.pem", certFile},
		{"/etc/ssl/private/ostree.example.com.key", keyFile},
		{"alias /srv/ostree/repo/;", "alias " + repo + "/;"},
	} {
		if !strings.Contains(site, r[0]) {
			t.Fatalf("docs/examples/nginx.conf no longer has %q", r[0])
		}
		site = strings.ReplaceAll(site, r[0], r[1])
	}
	dir := t.TempDir()
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // the workers read the test's private files
	}
	conf := fmt.Sprintf(`%s
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log;
events { worker_connections 64; }
http {
    access_log %[2]s/access.log;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    include %[2]s/site.conf;
}
`, user, dir)
	if err := os.WriteFile(filepath.Join(dir, "site.conf"), []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nginx, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		cmd.Wait()
	})
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr
		}
		if i > 100 {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx did not listen: %v\n%s%s", err, out.String(), log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A push through nginx configured as docs/examples/nginx.conf says: TLS
// at nginx, packs and resumable uploads streamed to the daemon, upload
// URLs that name nginx's https address, and clients pulling the result
// from the same nginx.
func TestBehindNginx(t *testing.T) {
	t.Parallel()
	certFile, keyFile := selfSigned(t)
	e := daemontest.New(t)
	e.Config.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	e.Start()
	addr := startNginx(t, strings.TrimPrefix(e.URL, "http://"), certFile, keyFile, e.Repo)
	url := "https://" + addr

	o := opts(e, url, "main", "big")
	o.CACert = certFile
	o.PackMax = 512 << 10 // the big files go as tus uploads
	res := push(t, o)
	if res.Uploads == 0 || res.Packs == 0 {
		t.Fatalf("want both packs and uploads through nginx: %+v", res)
	}
	e.CheckPublished(map[string]string{"main": fx.B, "big": fx.E})

	// A tus client following Location stays on nginx's https address.
	s := curl(t, "-sS", "--cacert", certFile, "-H", "Authorization: Bearer "+e.Tok.Secret,
		"-H", "Content-Type: application/json", "-d", `{"refs":[{"name":"other","new":"`+fx.C+`"}]}`, url+"/api/v1/sessions")
	sid := jsonField(t, s, "id")
	var offer []string
	for _, n := range daemontest.Objects(t, fx.Build, fx.C, "") {
		offer = append(offer, n.String())
	}
	body, _ := json.Marshal(map[string][]string{"objects": offer})
	var needed struct{ Needed []string }
	json.Unmarshal([]byte(curl(t, "-sS", "--cacert", certFile, "-H", "Authorization: Bearer "+e.Tok.Secret,
		"-H", "Content-Type: application/json", "-d", string(body), url+"/api/v1/sessions/"+sid+"/objects")), &needed)
	if len(needed.Needed) == 0 {
		t.Fatal("the daemon needs nothing of commit C")
	}
	hdr := curl(t, "-sS", "-D", "-", "-o", "/dev/null", "--cacert", certFile, "-X", "POST",
		"-H", "Authorization: Bearer "+e.Tok.Secret, "-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Length: 10",
		"-H", "Upload-Metadata: session "+b64(sid)+",object "+b64(needed.Needed[0]), url+"/api/v1/uploads/")
	if !strings.Contains(strings.ToLower(hdr), "location: "+url+"/api/v1/uploads/"+sid+"/") {
		t.Fatalf("Location through nginx does not name %s:\n%s", url, hdr)
	}

	// Clients pull over HTTPS from the same server block.
	dst := filepath.Join(t.TempDir(), "bare-user")
	storetest.MustOstree(t, "init", "--mode=bare-user", "--repo="+dst)
	storetest.MustOstree(t, "remote", "add", "--repo="+dst, "--no-gpg-verify", "--set=tls-ca-path="+certFile, "prod", url+"/repo")
	storetest.MustOstree(t, "pull", "--repo="+dst, "prod", "main")
	storetest.MustOstree(t, "fsck", "--repo="+dst)
}

func curl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("curl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func jsonField(t *testing.T, doc, key string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("bad JSON %q: %v", doc, err)
	}
	v, _ := m[key].(string)
	return v
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
