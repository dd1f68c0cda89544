package daemon_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startupLog runs the daemon binary as `receive -c FILE ARGS…`, reads its
// log until it says it listens, stops it and returns that log.
func startupLog(t *testing.T, args ...string) string {
	t.Helper()
	e := newEnv(t)
	cmd := exec.Command(fx.bin, append([]string{"receive", "-c", e.WriteConfig()}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stuck := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	defer stuck.Stop()
	var log strings.Builder
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "msg=listening") {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	for sc.Scan() { // the pipe must be read for the daemon to exit
	}
	cmd.Wait()
	if !strings.Contains(log.String(), "msg=listening") {
		t.Fatalf("receive %v did not start:\n%s", args, log.String())
	}
	return log.String()
}

// writeCert writes a self-signed certificate and its key.
func writeCert(t *testing.T) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ostree-upload test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// The daemon warns at start-up when it serves plain HTTP where other hosts
// can reach it (every interface, as the default ":8080" does), and not on
// loopback or with TLS.
func TestPlainHTTPWarning(t *testing.T) {
	t.Parallel()
	const warning = `level=WARN msg="serving plain HTTP on an address other hosts can reach: tokens and uploads cross the network unencrypted; listen on 127.0.0.1 behind a TLS proxy`
	if log := startupLog(t, "-a", ":0"); !strings.Contains(log, warning) || !strings.Contains(log, "address=[::]:") {
		t.Errorf("plain HTTP on every interface: no warning naming the address:\n%s", log)
	}
	if log := startupLog(t, "-a", "127.0.0.1:0"); strings.Contains(log, "plain HTTP") {
		t.Errorf("plain HTTP on loopback: warned:\n%s", log)
	}
	cert, key := writeCert(t)
	if log := startupLog(t, "-a", ":0", "--tls-cert", cert, "--tls-key", key); strings.Contains(log, "plain HTTP") {
		t.Errorf("HTTPS on every interface: warned:\n%s", log)
	}
}
