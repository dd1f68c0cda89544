package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

const statusSample = `Name:	ostree-upload
Umask:	0022
State:	S (sleeping)
VmPeak:	 1957388 kB
VmHWM:	  499400 kB
VmRSS:	  487700 kB
RssAnon:	  301234 kB
RssFile:	  186000 kB
RssShmem:	     466 kB
VmData:	  500000 kB
Threads:	12
`

func TestParseProcStatusReadsResidentSetLines(t *testing.T) {
	m, err := parseProcStatus(statusSample)
	if err != nil {
		t.Fatal(err)
	}
	want := procMem{VmRSS: 487700, RssAnon: 301234, RssFile: 186000, RssShmem: 466}
	if m != want {
		t.Fatalf("got %+v, want %+v", m, want)
	}
}

func TestParseProcStatusRefusesMissingOrOddRssAnon(t *testing.T) {
	for name, s := range map[string]string{
		"no RssAnon (kernel before 4.5)": "Name:\tx\nVmRSS:\t 10 kB\n",
		"not kB":                         "RssAnon:\t 10 MB\n",
		"not a number":                   "RssAnon:\t ten kB\n",
	} {
		if _, err := parseProcStatus(s); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestSampleMemReadsOwnProcess(t *testing.T) {
	stop := sampleMem(os.Getpid(), memSampleEvery)
	p := stop()
	if p.Error != "" || p.Samples < 1 || p.RssAnonKiB <= 0 || p.VmRSSKiB < p.RssAnonKiB {
		t.Fatalf("samples of the test process: %+v", p)
	}
}

func TestMemPeakKeepsEachFiguresMaximum(t *testing.T) {
	var p memPeak
	p.add(procMem{VmRSS: 100, RssAnon: 80, RssFile: 20})
	p.add(procMem{VmRSS: 90, RssAnon: 30, RssFile: 60})
	if p.RssAnonKiB != 80 || p.RssFileKiB != 60 || p.VmRSSKiB != 100 || p.Samples != 2 {
		t.Fatalf("got %+v", p)
	}
}

// TestJournalFigures writes a real bbolt database, then deletes most of it:
// the high-water mark read from the meta pages must match bbolt's own
// figures, and the free pages must show the deletion.
func TestJournalFigures(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	val := bytes.Repeat([]byte{'x'}, 100)
	for batch := range 5 {
		if err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("objects"))
			if err != nil {
				return err
			}
			for i := range 2000 {
				if err := b.Put(fmt.Appendf(nil, "%08d", batch*2000+i), val); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	var size int64
	if err := db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	js, err := statJournal(path) // while bbolt holds the file, as the daemon does
	if err != nil {
		t.Fatal(err)
	}
	if js.HighWaterBytes != size || js.FileBytes < size {
		t.Fatalf("statJournal = %+v, bbolt's size %d", js, size)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("objects")) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	free, err := readJournalFree(path)
	if err != nil {
		t.Fatal(err)
	}
	if free < size/2 {
		t.Fatalf("%d bytes free after deleting everything from %d", free, size)
	}
	if _, err := statJournal(filepath.Join(t.TempDir(), "missing.db")); err == nil {
		t.Fatal("a missing journal measured")
	}
	notBolt := filepath.Join(t.TempDir(), "x.db")
	if err := os.WriteFile(notBolt, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := statJournal(notBolt); err == nil || !strings.Contains(err.Error(), "not a bbolt file") {
		t.Fatalf("a file of zeros: %v", err)
	}
}

func TestJournalPathIsBesideTheRepo(t *testing.T) {
	if got := journalPath("/w/run/million/push/prod"); got != "/w/run/million/push/.prod.ostree-upload/journal.db" {
		t.Fatal(got)
	}
}

func TestWriteMillionShowsFloorMemoryJournalAndPull(t *testing.T) {
	m := &millionResult{Files: 2000, Objects: objectStats{Objects: 2005, DiskBytes: 9 * mib},
		Push: &measurement{Client: usage{WallSeconds: 10, MaxRSSKiB: 1024}, WireBytes: mib,
			Server: &usage{MaxRSSKiB: 4096, CPUSeconds: 3}},
		Split: true, Commit: &usage{WallSeconds: 1},
		DaemonMem: &memPeak{RssAnonKiB: 2048, RssFileKiB: 1024, Samples: 30, IntervalMillis: 100},
		Journal: &journalFigures{Objects: 2005, BytesPerObj: 260, HighWaterPObj: 250,
			Uploaded:  &journalSize{FileBytes: 512 * 1024, HighWaterBytes: 500 * 1024},
			Committed: &journalSize{FileBytes: 512 * 1024, HighWaterBytes: 510 * 1024},
			Stopped:   &journalSize{FileBytes: 512 * 1024, HighWaterBytes: 510 * 1024, FreeBytes: 400 * 1024}},
		Floor:        &floorResult{WallSeconds: 4, CopySeconds: 3, SyncSeconds: 1, SameFilesystem: true},
		Pull:         &measurement{Client: usage{WallSeconds: 20, MaxRSSKiB: 2048}, WireBytes: mib},
		PushOverPull: 0.5}
	var out strings.Builder
	writeMillion(&out, "tiny-files push", m)
	for _, want := range []string{
		"tiny-files push: 2000 files, 2005 objects",
		"total 10.0 s (push --no-publish, then sessions commit: 1.0 s)",
		"floor (cp -a of the objects, syncfs) 4.0 s (copy 3.0 s, sync 1.0 s); push/floor 2.50",
		"daemon peak RSS 4.0 MiB (sampled every 100 ms: RssAnon 2.0 MiB, RssFile 1.0 MiB)",
		"journal uploaded 512.0 KiB (high-water 500.0 KiB) = 260 B/object",
		"stopped 512.0 KiB (high-water 510.0 KiB), 400.0 KiB free",
		"ostree pull 20.0 s", "push/pull 0.50",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in:\n%s", want, out.String())
		}
	}
}

// A tiny-files scenario run several times lists each run's push, floor and
// pull, their medians, and the ratio of the medians.
func TestWriteMillionListsTheRunsAndTheirMedians(t *testing.T) {
	m := &millionResult{Files: 2000, Objects: objectStats{Objects: 2005},
		Push: &measurement{Client: usage{WallSeconds: 10}},
		Pull: &measurement{Client: usage{WallSeconds: 20}}, PushOverPull: 0.5,
		Runs: []tinyRun{
			{PushSeconds: 10, FloorSeconds: 4, PullSeconds: 20},
			{PushSeconds: 12, FloorSeconds: 5, PullSeconds: 60},
			{PushSeconds: 11, FloorSeconds: 3, PullSeconds: 44},
		},
	}
	m.MedianPushOverPull = medianRatio(m.Runs)
	if m.MedianPushOverPull != 0.25 {
		t.Errorf("median ratio %v, want 11/44 = 0.25", m.MedianPushOverPull)
	}
	var out strings.Builder
	writeMillion(&out, "tiny-files push", m)
	want := "3 runs (the figures above are the first's): push 10.0, 12.0, 11.0 s (median 11.0), floor 4.0, 5.0, 3.0 s (median 4.0), ostree pull 20.0, 60.0, 44.0 s (median 44.0); push/pull of the medians 0.25"
	if !strings.Contains(out.String(), want) {
		t.Errorf("missing %q in:\n%s", want, out.String())
	}
	m.Runs = m.Runs[:1]
	out.Reset()
	writeMillion(&out, "tiny-files push", m)
	if strings.Contains(out.String(), "runs (") {
		t.Errorf("one run listed as several:\n%s", out.String())
	}
}
