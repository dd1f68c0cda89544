package uploader_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/uploader"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ostree-upload test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// receive --tls-cert/--tls-key serves HTTPS; push --cacert trusts a
// self-signed certificate, and without it refuses at once (exit 1).
func TestTLS(t *testing.T) {
	t.Parallel()
	certFile, keyFile := selfSigned(t)
	e := daemontest.New(t)
	addr := freeAddr(t)
	cmd := exec.Command(bin, "receive", "-c", e.WriteConfig(), "-r", e.Repo, "--state-dir", e.State, "-a", addr,
		"--tls-cert", certFile, "--tls-key", keyFile)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	url := "https://" + addr
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for i := 0; ; i++ {
		res, err := insecure.Get(url + "/healthz")
		if err == nil {
			res.Body.Close()
			break
		}
		if i > 100 {
			t.Fatalf("daemon did not come up over HTTPS: %v\n%s", err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Plain HTTP to the TLS port gets nowhere.
	if res, err := http.Get("http://" + addr + "/healthz"); err == nil && res.StatusCode == 200 {
		t.Fatal("plain HTTP answered on the TLS port")
	}
	o := opts(e, url, "other")
	o.RetryTimeout = 5 * time.Second
	if _, err := uploader.Push(ctx, o); err == nil || uploader.Temporary(err) {
		t.Fatalf("push without --cacert: %v, want a permanent failure", err)
	}
	o.CACert = certFile
	push(t, o)
	e.CheckPublished(map[string]string{"other": fx.C})
	// The command line takes --cacert too.
	out, err := exec.Command(bin, "push", "-q", "-r", fx.Build, "-a", url, "-b", "other", "--cacert", certFile, "-t", e.Tok.Secret).CombinedOutput()
	if err != nil {
		t.Fatalf("push --cacert: %v\n%s", err, out)
	}
}
