package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// memSampleEvery is how often the daemon's memory is sampled during the
// tiny-file pushes.
const memSampleEvery = 100 * time.Millisecond

// procMem is the memory lines of /proc/PID/status, in KiB.
type procMem struct {
	VmRSS, RssAnon, RssFile, RssShmem int64
}

// parseProcStatus reads the resident set lines of a /proc/PID/status file.
// RssAnon is required (Linux 4.5 and later); the others default to 0.
func parseProcStatus(s string) (procMem, error) {
	var m procMem
	found := false
	for line := range strings.Lines(s) {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "VmRSS":
			dst = &m.VmRSS
		case "RssAnon":
			dst, found = &m.RssAnon, true
		case "RssFile":
			dst = &m.RssFile
		case "RssShmem":
			dst = &m.RssShmem
		default:
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return procMem{}, fmt.Errorf("status line %q: want a number of kB", strings.TrimSpace(line))
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return procMem{}, fmt.Errorf("status line %q: %w", strings.TrimSpace(line), err)
		}
		*dst = n
	}
	if !found {
		return procMem{}, errors.New("no RssAnon line (Linux 4.5 or later has it)")
	}
	return m, nil
}

// memPeak is the largest value of each resident set figure over the samples
// of a process's /proc/PID/status (each figure's own peak: they need not come
// from the same sample). RssAnon is the process's own heap and stacks;
// RssFile holds the pages of mapped files, the journal's memory map among
// them, which the kernel can drop at any time.
type memPeak struct {
	RssAnonKiB     int64  `json:"rss_anon_kib"`
	RssFileKiB     int64  `json:"rss_file_kib"`
	RssShmemKiB    int64  `json:"rss_shmem_kib"`
	VmRSSKiB       int64  `json:"vm_rss_kib"` // sampled; ru_maxrss (max_rss_kib) is the kernel's exact peak
	Samples        int    `json:"samples"`
	IntervalMillis int64  `json:"interval_ms"`
	Error          string `json:"error,omitempty"` // why sampling stopped early, if not because the process ended
}

func (p *memPeak) add(m procMem) {
	p.RssAnonKiB = max(p.RssAnonKiB, m.RssAnon)
	p.RssFileKiB = max(p.RssFileKiB, m.RssFile)
	p.RssShmemKiB = max(p.RssShmemKiB, m.RssShmem)
	p.VmRSSKiB = max(p.VmRSSKiB, m.VmRSS)
	p.Samples++
}

// sampleMem reads /proc/PID/status every interval until the returned stop
// is called (which takes a last sample and returns the peaks) or the process
// is gone.
func sampleMem(pid int, every time.Duration) (stop func() memPeak) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	var (
		mu   sync.Mutex
		peak = memPeak{IntervalMillis: every.Milliseconds()}
		done = make(chan struct{})
		quit = make(chan struct{})
	)
	sample := func() bool {
		raw, err := os.ReadFile(path)
		if err != nil {
			return false // the process ended
		}
		m, err := parseProcStatus(string(raw))
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			peak.Error = err.Error()
			return false
		}
		peak.add(m)
		return true
	}
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for sample() {
			select {
			case <-quit:
				return
			case <-t.C:
			}
		}
	}()
	return func() memPeak {
		close(quit)
		<-done
		sample()
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// journalSize is what the daemon's journal file (a bbolt database) holds.
type journalSize struct {
	FileBytes int64 `json:"file_bytes"`
	// HighWaterBytes is the end of the last page bbolt allocated (from the
	// newer meta page); the file is longer by bbolt's preallocation.
	HighWaterBytes int64 `json:"high_water_bytes,omitempty"`
	// FreeBytes are the pages below the high-water mark on bbolt's free
	// list: space reused by later writes, never given back to the
	// filesystem. Only read once the daemon has stopped (it needs the file's
	// lock).
	FreeBytes int64 `json:"free_bytes,omitempty"`
}

// bboltMagic marks a bbolt meta page.
const bboltMagic = 0xED0CDAED

// statJournal measures the journal at path while the daemon may hold it:
// its size and the high-water mark from its meta pages, read without bbolt
// (which would wait for the daemon's lock).
func statJournal(path string) (journalSize, error) {
	f, err := os.Open(path)
	if err != nil {
		return journalSize{}, fmt.Errorf("journal: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return journalSize{}, fmt.Errorf("journal: %w", err)
	}
	js := journalSize{FileBytes: st.Size()}
	if js.HighWaterBytes, err = bboltHighWater(f); err != nil {
		return js, fmt.Errorf("journal %s: %w", path, err)
	}
	return js, nil
}

// bboltHighWater reads a bbolt file's two meta pages and returns the newer
// valid one's high-water mark (its next page id times the page size). A meta
// page is a 16-byte page header followed by magic, version, page size and
// flags (uint32 each), the root bucket (two uint64), the free list's page,
// the high-water page id and the transaction id (uint64 each), in the
// machine's byte order.
func bboltHighWater(r io.ReaderAt) (int64, error) {
	var best struct{ txid, hw uint64 }
	found := false
	buf := make([]byte, 80)
	off := int64(0)
	for i := range 2 {
		if _, err := r.ReadAt(buf, off); err != nil {
			return 0, fmt.Errorf("read meta page %d: %w", i, err)
		}
		magic := binary.NativeEndian.Uint32(buf[16:])
		psize := binary.NativeEndian.Uint32(buf[24:])
		if magic != bboltMagic || psize < 512 {
			if i == 0 {
				return 0, errors.New("not a bbolt file (no meta page at offset 0)")
			}
			break
		}
		pgid := binary.NativeEndian.Uint64(buf[56:])
		txid := binary.NativeEndian.Uint64(buf[64:])
		if !found || txid > best.txid {
			best.txid, best.hw, found = txid, pgid*uint64(psize), true
		}
		off = int64(psize) // the second meta page
	}
	return int64(best.hw), nil
}

// readJournalFree opens the (stopped) daemon's journal read-only and counts
// its free pages.
func readJournalFree(path string) (int64, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true, Timeout: 5 * time.Second})
	if err != nil {
		return 0, fmt.Errorf("open journal %s: %w", path, err)
	}
	defer db.Close()
	s := db.Stats()
	return int64(s.FreePageN+s.PendingPageN) * int64(db.Info().PageSize), nil
}

// floorResult is the time to create a repository's objects durably without
// ostree-upload: `cp -a` of its objects directory, then syncfs.
type floorResult struct {
	CopySeconds float64 `json:"copy_seconds"`
	SyncSeconds float64 `json:"sync_seconds"`
	WallSeconds float64 `json:"wall_seconds"` // copy and sync
	// SameFilesystem says the copy went to the source's filesystem, as
	// asked; false when the work directory's fixtures and runs are on
	// different ones.
	SameFilesystem bool `json:"same_filesystem"`
}

// measureFloor copies the directory src to dst (which must not exist) with
// `cp -a` and syncs dst's filesystem, after a sync of everything else so
// that only the copy's writes are waited for.
func measureFloor(ctx context.Context, src, dst string) (*floorResult, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return nil, err
	}
	var a, b syscall.Stat_t
	if err := syscall.Stat(src, &a); err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	if err := syscall.Stat(filepath.Dir(dst), &b); err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	res := &floorResult{SameFilesystem: a.Dev == b.Dev}
	syscall.Sync()
	start := time.Now()
	if out, err := exec.CommandContext(ctx, "cp", "-a", src, dst).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("floor: cp -a %s %s: %w: %s", src, dst, err, tail(string(out), 500))
	}
	copied := time.Now()
	d, err := os.Open(dst)
	if err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	err = unix.Syncfs(int(d.Fd()))
	d.Close()
	if err != nil {
		return nil, fmt.Errorf("floor: syncfs %s: %w", dst, err)
	}
	res.CopySeconds = copied.Sub(start).Seconds()
	res.SyncSeconds = time.Since(copied).Seconds()
	res.WallSeconds = time.Since(start).Seconds()
	return res, nil
}

// journalPath is where a daemon started with -r repo and no state dir keeps
// its journal: journal.db in the state dir beside the repository,
// .NAME.ostree-upload.
func journalPath(repo string) string {
	return filepath.Join(filepath.Dir(repo), "."+filepath.Base(repo)+".ostree-upload", "journal.db")
}

// probeJournal measures the journal after a push that succeeded. When the
// push was split (--no-publish), it measures the journal holding every
// uploaded object, then publishes the session with `sessions commit`, whose
// time and CPU it adds to the client's (so that the client's figures stay
// those of a whole push), and measures the journal again.
func (b *bench) probeJournal(ctx context.Context, env *netEnv, ep endpoints, prod, dir string, m *measurement, probe *pushProbe) error {
	jf := &journalFigures{Path: journalPath(prod)}
	probe.journal = jf
	for _, k := range []string{"sent", "objects"} {
		if v, ok := m.PushStats[k].(float64); ok && v > 0 {
			jf.Objects = int(v)
			break
		}
	}
	if probe.split {
		js, err := statJournal(jf.Path)
		if err != nil {
			return err
		}
		jf.Uploaded = &js
		if jf.Objects > 0 {
			jf.BytesPerObj = float64(js.FileBytes) / float64(jf.Objects)
			jf.HighWaterPObj = float64(js.HighWaterBytes) / float64(jf.Objects)
		}
		id, _ := m.PushStats["session"].(string)
		if id == "" {
			return fmt.Errorf("push --no-publish wrote no session id to --stats-json:\n%s", fileTail(filepath.Join(dir, "push.log"), 3000))
		}
		cctx, cancel := context.WithTimeout(ctx, b.opt.ClientTimeout)
		logPath := filepath.Join(dir, "commit.log")
		u, err := runClient(cctx, env.BuildNS, []string{"OSTREE_UPLOAD_TOKEN=" + b.token}, logPath,
			b.bin, "sessions", "commit", id, "-a", ep.pushURL)
		cancel()
		if err != nil {
			return fmt.Errorf("sessions commit: %w", err)
		}
		if u.ExitCode != 0 {
			return fmt.Errorf("ostree-upload sessions commit exited %d:\n%s\ndaemon log:\n%s",
				u.ExitCode, fileTail(logPath, 3000), fileTail(filepath.Join(dir, "daemon.log"), 3000))
		}
		probe.commit = &u
		m.Client.WallSeconds += u.WallSeconds
		m.Client.CPUSeconds += u.CPUSeconds
		m.Client.MaxRSSKiB = max(m.Client.MaxRSSKiB, u.MaxRSSKiB)
	}
	js, err := statJournal(jf.Path)
	if err != nil {
		return err
	}
	jf.Committed = &js
	return nil
}
