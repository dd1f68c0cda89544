package daemon_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/config"
	"github.com/ostree-upload/ostree-upload/daemon/daemontest"
	"github.com/ostree-upload/ostree-upload/store"
	"github.com/ostree-upload/ostree-upload/store/object"
	"golang.org/x/sys/unix"
)

// entry is one tar entry of a pack under test.
type entry struct {
	hdr  tar.Header
	data []byte
}

// objEntry is the entry of a build-repo object, named as in an archive repo.
func objEntry(t testing.TB, n object.Name) entry {
	b := objectBytes(t, n)
	return entry{tar.Header{Name: n.RelPath(), Size: int64(len(b)), Mode: 0o644, Typeflag: tar.TypeReg}, b}
}

func dirEntry(name string) entry {
	return entry{hdr: tar.Header{Name: name, Mode: 0o755, Typeflag: tar.TypeDir}}
}

// pack writes entries as a tar in format (tar.FormatUnknown: the writer's
// choice).
func pack(t testing.TB, format tar.Format, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		h.Format = format
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (e *env) sendPack(tok token, sid string, body []byte) resp {
	e.t.Helper()
	return e.do(tok, "POST", api.PacksPath(sid), bytes.NewReader(body), map[string]string{"Content-Type": "application/x-tar"})
}

func names(ns []object.Name) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.String())
	}
	return out
}

func TestPacksPublish(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	needed := e.need(e.Tok, s.ID, objectsOf(t, fx.a, ""))
	// Three packs, one per header format, with directory entries, an object
	// the session did not ask for, and a duplicate.
	var extra object.Name
	for _, n := range objectsOf(t, fx.c, "") {
		if !slices.Contains(needed, n.String()) {
			extra = n
			break
		}
	}
	formats := []tar.Format{tar.FormatUSTAR, tar.FormatPAX, tar.FormatGNU}
	stored := 0
	for i, f := range formats {
		entries := []entry{dirEntry("./"), dirEntry("objects/")}
		for j, n := range needed {
			if j%len(formats) == i {
				name, _ := object.ParseName(n)
				entries = append(entries, objEntry(t, name))
			}
		}
		entries = append(entries, objEntry(t, extra), entries[len(entries)-1])
		r := e.sendPack(e.Tok, s.ID, pack(t, f, entries...))
		want(t, r, 200)
		var res api.PackResult
		r.json(t, &res)
		reasons := map[string]string{}
		for _, sk := range res.Skips {
			reasons[sk.Reason] = sk.Object
		}
		if res.Skipped != 2 || len(res.Skips) != 2 || reasons["not requested in this session"] != extra.String() || reasons["duplicate entry"] == "" {
			t.Errorf("%v pack: skips %+v, want the extra object and the duplicate", f, res)
		}
		stored += res.Stored
	}
	if stored != len(needed) {
		t.Fatalf("packs stored %d objects, %d were needed", stored, len(needed))
	}
	// Sent again, every entry is skipped as verified.
	again := pack(t, tar.FormatUnknown, objEntry(t, objectsOf(t, fx.a, "")[0]))
	var res api.PackResult
	r := e.sendPack(e.Tok, s.ID, again)
	want(t, r, 200)
	r.json(t, &res)
	if res.Stored != 0 || res.Skipped != 1 {
		t.Errorf("a verified object sent again: %+v", res)
	}
	// An entry the session does not want is skipped even if corrupt: only
	// a wanted one refuses the pack.
	corrupt := func(n object.Name) entry {
		e := objEntry(t, n)
		e.data = append(bytes.Clone(e.data[:len(e.data)-1]), e.data[len(e.data)-1]^0xff)
		return e
	}
	r = e.sendPack(e.Tok, s.ID, pack(t, tar.FormatUnknown, corrupt(objectsOf(t, fx.a, "")[0]), corrupt(extra)))
	want(t, r, 200)
	res = api.PackResult{}
	r.json(t, &res)
	if res.Stored != 0 || res.Skipped != 2 {
		t.Errorf("corrupt copies of a verified and an unrequested object: %+v, want both skipped", res)
	}
	if left := e.need(e.Tok, s.ID, objectsOf(t, fx.a, "")); len(left) != 0 {
		t.Fatalf("still needed after the packs: %v", left)
	}
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil), 200)
	e.CheckPublished(map[string]string{"main": fx.a})
}

func TestPackRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Config.MaxPackSize = config.Size(1 << 20)
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	all := objectsOf(t, fx.a, "")
	e.need(e.Tok, s.ID, all)
	var small []object.Name // objects to put before each bad entry
	for _, n := range all {
		if fi, err := os.Stat(filepath.Join(fx.build, n.RelPath())); err == nil && fi.Size() < 4096 {
			small = append(small, n)
		}
	}
	good := func(i int) entry { return objEntry(t, small[i]) }
	var file object.Name // a file object no good entry of a case is
	for _, n := range small[20:] {
		if n.Type == object.File {
			file = n
			break
		}
	}
	hdr := func(name string, typ byte) entry {
		return entry{hdr: tar.Header{Name: name, Mode: 0o644, Typeflag: typ, Linkname: "objects/00/x"}}
	}
	obj := file.RelPath()
	cases := []struct {
		what   string
		bad    entry
		raw    []byte // instead of a pack
		status int
	}{
		{what: "symlink", bad: hdr(obj, tar.TypeSymlink), status: 400},
		{what: "hard link", bad: hdr(obj, tar.TypeLink), status: 400},
		{what: "character device", bad: hdr(obj, tar.TypeChar), status: 400},
		{what: "fifo", bad: hdr(obj, tar.TypeFifo), status: 400},
		{what: "absolute path", bad: entry{tar.Header{Name: "/" + obj, Size: 1, Mode: 0o644, Typeflag: tar.TypeReg}, []byte("x")}, status: 400},
		{what: "dot-dot path", bad: entry{tar.Header{Name: "objects/../" + obj, Size: 1, Mode: 0o644, Typeflag: tar.TypeReg}, []byte("x")}, status: 400},
		{what: "dot-dot directory", bad: dirEntry("../"), status: 400},
		{what: "not an object", bad: entry{tar.Header{Name: "refs/heads/main", Size: 1, Mode: 0o644, Typeflag: tar.TypeReg}, []byte("x")}, status: 400},
		{what: "upper-case name", bad: entry{tar.Header{Name: strings.ToUpper(obj[:10]) + obj[10:], Size: 1, Mode: 0o644, Typeflag: tar.TypeReg}, []byte("x")}, status: 400},
		{what: "unknown type", bad: entry{tar.Header{Name: strings.TrimSuffix(obj, ".filez") + ".exe", Size: 1, Mode: 0o644, Typeflag: tar.TypeReg}, []byte("x")}, status: 400},
		{what: "corrupt object", bad: func() entry {
			en := objEntry(t, file)
			en.data = append([]byte(nil), en.data...)
			en.data[len(en.data)-3] ^= 0xff
			return en
		}(), status: 422},
		{what: "commitmeta of another commit", bad: entry{tar.Header{Name: object.Name{Sum: mustSum(t, fx.b), Type: object.CommitMeta}.RelPath(), Size: 1, Mode: 0o644, Typeflag: tar.TypeReg}, []byte("x")}, status: 400},
		{what: "oversized entry", raw: func() []byte {
			// Only the header: the daemon refuses before any data.
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			tw.WriteHeader(&tar.Header{Name: object.Name{Sum: file.Sum, Type: object.DirTree}.RelPath(), Size: object.MaxMetadataSize + 1, Mode: 0o644, Typeflag: tar.TypeReg})
			return buf.Bytes()
		}(), status: 413},
		{what: "not a tar", raw: bytes.Repeat([]byte("garbage!"), 200), status: 400},
		{what: "truncated tar", raw: func() []byte { p := pack(t, tar.FormatPAX, good(2)); return p[:700] }(), status: 400},
		{what: "over max_pack_size", raw: pack(t, tar.FormatUSTAR, entry{tar.Header{Name: object.Name{Type: object.File}.RelPath(), Size: 2 << 20, Mode: 0o644, Typeflag: tar.TypeReg}, make([]byte, 2<<20)}), status: 413},
	}
	for i, c := range cases {
		body := c.raw
		keep := 0
		if body == nil {
			keep = 1
			body = pack(t, tar.FormatPAX, good(i+1), c.bad)
		}
		r := e.sendPack(e.Tok, s.ID, body)
		if r.status != c.status {
			t.Errorf("%s: %d %s, want %d", c.what, r.status, r.body, c.status)
			continue
		}
		var ae api.Error
		r.json(t, &ae)
		if ae.Stored != keep {
			t.Errorf("%s: kept %d entries before the bad one, want %d: %s", c.what, ae.Stored, keep, r.body)
		}
		if c.status == 422 && ae.Object != file.String() {
			t.Errorf("%s: refusal names %q, want %s", c.what, ae.Object, file)
		}
		if keep == 1 && slices.Contains(e.need(e.Tok, s.ID, small[i+1:i+2]), small[i+1].String()) {
			t.Errorf("%s: the good entry before the bad one was lost", c.what)
		}
	}
	// The daemon still serves, nothing reached production, and the session
	// publishes once the real objects arrive.
	if n := objectFiles(t, e.Repo); n != 0 {
		t.Fatalf("%d objects in production after refused packs", n)
	}
	var rest []entry
	size := 0
	for _, n := range e.need(e.Tok, s.ID, all) {
		name, _ := object.ParseName(n)
		en := objEntry(t, name)
		if size+len(en.data) > 1<<19 {
			want(t, e.sendPack(e.Tok, s.ID, pack(t, tar.FormatUnknown, rest...)), 200)
			rest, size = nil, 0
		}
		rest, size = append(rest, en), size+len(en.data)+512
	}
	want(t, e.sendPack(e.Tok, s.ID, pack(t, tar.FormatUnknown, rest...)), 200)
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil), 200)
	e.CheckPublished(map[string]string{"main": fx.a})
	// Another token cannot post into the session; an ended session takes no
	// packs.
	want(t, e.sendPack(e.Narrow, s.ID, pack(t, tar.FormatUnknown, good(0))), 404)
	want(t, e.sendPack(e.Tok, s.ID, pack(t, tar.FormatUnknown, good(0))), 409)
}

func mustSum(t testing.TB, s string) object.Checksum {
	c, err := object.ParseChecksum(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// entriesOf makes pack entries of the named build-repo objects.
func entriesOf(t testing.TB, names []string) []entry {
	var entries []entry
	for _, n := range names {
		name, _ := object.ParseName(n)
		entries = append(entries, objEntry(t, name))
	}
	return entries
}

// partialPack opens a pack request for all of names and sends it up to the
// middle of entry k's data, leaving the connection open.
func (e *env) partialPack(sid string, names []string, k int) net.Conn {
	e.t.Helper()
	entries := entriesOf(e.t, names)
	body := pack(e.t, tar.FormatUSTAR, entries...)
	cut := 0
	for _, en := range entries[:k] {
		cut += 512 + (len(en.data)+511)/512*512
	}
	cut += 512 + len(entries[k].data)/2
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.URL, "http://"))
	if err != nil {
		e.t.Fatal(err)
	}
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/x-tar\r\nContent-Length: %d\r\n\r\n",
		api.PacksPath(sid), e.Tok.Secret, len(body))
	conn.Write(body[:cut])
	return conn
}

// A pack cut in the middle of an entry keeps every entry before it; the
// rest is needed again. A restart clears what was staged.
func TestPackBrokenOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	needed := e.need(e.Tok, s.ID, objectsOf(t, fx.a, ""))
	k := len(needed) / 2
	conn := e.partialPack(s.ID, needed, k)
	time.Sleep(300 * time.Millisecond)
	conn.Close()

	// The daemon journals what arrived once it sees the connection end.
	var left []string
	for i := 0; i < 50; i++ {
		if left = e.need(e.Tok, s.ID, objectsOf(t, fx.a, "")); len(left) == len(needed)-k {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !slices.Equal(left, needed[k:]) {
		t.Fatalf("after a pack cut in entry %d of %d: %d still needed, want exactly the %d from entry %d on",
			k, len(needed), len(left), len(needed)-k, k)
	}
	// A staged leftover (as a kill -9 mid-pack leaves) goes at restart.
	leftover := filepath.Join(e.State, "spools", e.Tok.Hash, "objects", "ab", store.TempPrefix+"leftover")
	if err := os.WriteFile(leftover, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.Restart()
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("staged leftover survived a restart: %v", err)
	}
	rest := entriesOf(t, e.need(e.Tok, s.ID, objectsOf(t, fx.a, "")))
	want(t, e.sendPack(e.Tok, s.ID, pack(t, tar.FormatGNU, rest...)), 200)
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil), 200)
	e.CheckPublished(map[string]string{"main": fx.a})
}

// BenchmarkPack measures one pack holding every object of the fixture's
// commit A, sent to a fresh daemon.
func BenchmarkPack(b *testing.B) {
	objs := objectsOf(b, fx.a, "")
	var entries []entry
	for _, o := range objs {
		entries = append(entries, objEntry(b, o))
	}
	body := pack(b, tar.FormatUSTAR, entries...)
	req, _ := json.Marshal(api.ObjectsRequest{Objects: names(objs)})
	jsonHdr := map[string]string{"Content-Type": "application/json"}
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e := &env{Env: daemontest.New(b)}
		e.Start()
		sreq, _ := json.Marshal(api.SessionRequest{Refs: []api.RefUpdate{{Name: "main", New: fx.a}}})
		r, err := e.send(e.Tok, "POST", api.PathSessions, bytes.NewReader(sreq), jsonHdr)
		var sess api.Session
		if err != nil || json.Unmarshal(r.body, &sess) != nil {
			b.Fatal(err, string(r.body))
		}
		if r, err = e.send(e.Tok, "POST", api.PathSessions+"/"+sess.ID+"/objects", bytes.NewReader(req), jsonHdr); err != nil || r.status != 200 {
			b.Fatal(err, string(r.body))
		}
		b.StartTimer()
		r, err = e.send(e.Tok, "POST", api.PacksPath(sess.ID), bytes.NewReader(body), nil)
		b.StopTimer()
		if err != nil || r.status != 200 {
			b.Fatal(err, r.status, string(r.body))
		}
		e.Stop()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*len(objs)), "µs/object")
}

// A pack whose client stalls mid-entry: a negotiation meanwhile counts
// every entry that arrived, without waiting for the connection to end.
func TestPackStalled(t *testing.T) {
	e, s, needed, k := stalledPack(t)
	start := time.Now()
	left := e.need(e.Tok, s.ID, objectsOf(t, fx.a, ""))
	if !slices.Equal(left, needed[k:]) {
		t.Fatalf("with a pack stalled in entry %d: %d still needed, want the %d from entry %d on", k, len(left), len(needed)-k, k)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("negotiation waited %s for the stalled pack", d)
	}
}

// stalledPack starts a daemon and a session of commit A whose needed
// objects are all named, and sends a pack of them that stalls in entry k,
// a third of the way, once the daemon has read what arrived.
func stalledPack(t *testing.T) (e *env, s api.Session, needed []string, k int) {
	e = newEnv(t)
	e.Start()
	s = e.session(e.Tok, []api.RefUpdate{{Name: "main", New: fx.a}}, false)
	needed = e.need(e.Tok, s.ID, objectsOf(t, fx.a, ""))
	k = len(needed) / 3
	conn := e.partialPack(s.ID, needed, k)
	t.Cleanup(func() { conn.Close() })
	time.Sleep(300 * time.Millisecond) // the daemon reads what arrived
	return e, s, needed, k
}

// A negotiation with no_wait answers at once, while a pack of the session
// is still being read: it neither waits for the pack nor flushes what the
// pack staged, so the pack's objects are still needed. The pipelined
// client asks so for names none of its packs in flight holds.
func TestNegotiationNoWait(t *testing.T) {
	e, s, needed, k := stalledPack(t)
	start := time.Now()
	r := e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/objects", api.ObjectsRequest{Objects: needed, NoWait: true})
	took := time.Since(start)
	want(t, r, 200)
	var or api.ObjectsResponse
	r.json(t, &or)
	if settle := 2 * time.Second; took >= settle { // the daemon's wait for packs in progress
		t.Fatalf("a negotiation with no_wait took %s, as long as one that waits for the packs in progress (%s)", took, settle)
	}
	// The pack's staged entries are flushed a second after they arrived;
	// only an answer before that shows that nothing was flushed for it.
	if took < 500*time.Millisecond && !slices.Equal(or.Needed, needed) {
		t.Errorf("with a pack stalled in entry %d: %d still needed, want all %d (nothing flushed)", k, len(or.Needed), len(needed))
	}
}

// sparsePack is a pack of one PAX sparse entry (GNU sparse format 1.0) named
// name: a few kilobytes that a tar reader expands to realsize bytes, all
// but one of them a hole.
func sparsePack(name string, realsize int64) []byte {
	header := func(name string, typ byte, size int) []byte {
		b := make([]byte, 512)
		copy(b, name)
		copy(b[100:], "0000644\x00")
		copy(b[108:], "0000000\x00")
		copy(b[116:], "0000000\x00")
		copy(b[124:], fmt.Sprintf("%011o\x00", size))
		copy(b[136:], "00000000000\x00")
		b[156] = typ
		copy(b[257:], "ustar\x0000")
		copy(b[148:], "        ")
		sum := 0
		for _, c := range b {
			sum += int(c)
		}
		copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
		return b
	}
	pad := func(b []byte) []byte {
		for len(b)%512 != 0 {
			b = append(b, 0)
		}
		return b
	}
	record := func(k, v string) string {
		for n := len(k) + len(v) + 3; ; {
			s := fmt.Sprintf("%d %s=%s\n", n, k, v)
			if len(s) == n {
				return s
			}
			n = len(s)
		}
	}
	recs := record("GNU.sparse.major", "1") + record("GNU.sparse.minor", "0") +
		record("GNU.sparse.name", name) + record("GNU.sparse.realsize", fmt.Sprint(realsize))
	data := append(pad([]byte(fmt.Sprintf("1\n%d\n1\n", realsize-1))), 'x')
	out := append(header("PaxHeaders/x", 'x', len(recs)), pad([]byte(recs))...)
	out = append(out, header("GNUSparseFile.0/x", '0', len(data))...)
	out = append(out, pad(data)...)
	return append(out, make([]byte, 1024)...)
}

// A pack stops at the repository's free-space floor: it asks for room a
// MiB of entries at a time (or an entry's size), is answered 507 with code
// space once the next entries would cross the floor, and keeps the entries
// before; with room again, the same pack stores the rest.
func TestPackStopsAtTheSpaceFloor(t *testing.T) {
	t.Parallel()
	disk := daemontest.SmallDisk(t, "64m")
	e := newEnv(t)
	e.Repo, e.State = filepath.Join(disk, "repo"), filepath.Join(disk, "state")
	e.Start()
	s := e.session(e.Tok, []api.RefUpdate{{Name: "big", New: fx.e}}, false)
	needed := e.need(e.Tok, s.ID, objectsOf(t, fx.e, ""))
	body := pack(t, tar.FormatUSTAR, entriesOf(t, needed)...)

	// Leave the floor (3 % of the filesystem, the default) and 6 MiB.
	var fs unix.Statfs_t
	if err := unix.Statfs(disk, &fs); err != nil {
		t.Fatal(err)
	}
	free := int64(fs.Bavail) * int64(fs.Bsize)
	floor := int64(fs.Blocks) * int64(fs.Bsize) * 3 / 100
	filler := filepath.Join(disk, "filler")
	if out, err := exec.Command("fallocate", "-l", fmt.Sprint(free-floor-6<<20), filler).CombinedOutput(); err != nil {
		t.Fatalf("fallocate: %v %s", err, out)
	}
	if int64(len(body)) < 12<<20 {
		t.Fatalf("a pack of %d bytes does not reach the floor", len(body))
	}
	r := e.sendPack(e.Tok, s.ID, body)
	ae := apiError(t, r)
	if r.status != 507 || ae.Code != api.CodeSpace {
		t.Fatalf("pack past the floor: %d %s, want 507 with code %q", r.status, r.body, api.CodeSpace)
	}
	if ae.Stored == 0 || ae.Stored >= len(needed) {
		t.Fatalf("kept %d of %d entries before the floor", ae.Stored, len(needed))
	}
	if err := unix.Statfs(disk, &fs); err != nil || int64(fs.Bavail)*int64(fs.Bsize) < floor {
		t.Fatalf("the pack took the filesystem below its floor: %d bytes free, floor %d (%v)", int64(fs.Bavail)*int64(fs.Bsize), floor, err)
	}
	still := e.need(e.Tok, s.ID, objectsOf(t, fx.e, ""))
	if len(still) != len(needed)-ae.Stored {
		t.Fatalf("%d objects still needed after %d of %d were kept", len(still), ae.Stored, len(needed))
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	r = e.sendPack(e.Tok, s.ID, body)
	want(t, r, 200)
	var res api.PackResult
	r.json(t, &res)
	if res.Stored != len(still) || res.Skipped != ae.Stored {
		t.Fatalf("the same pack with room: stored %d, skipped %d; want %d, %d", res.Stored, res.Skipped, len(still), ae.Stored)
	}
	want(t, e.doJSON(e.Tok, "POST", api.PathSessions+"/"+s.ID+"/commit", nil), 200)
	e.CheckPublished(map[string]string{"big": fx.e})
}
