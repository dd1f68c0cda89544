package journal

import (
	"time"

	"golang.org/x/sys/unix"
)

// trimEvery is the least time between two trims. A trim costs a system
// call and, later, a minor fault for each page touched again: trimmed much
// more often (after every write, or every few milliseconds), a push of a
// million objects spent a fifth of the daemon's time faulting the same
// pages back in. Between two trims, the mapping holds at most the pages
// touched meanwhile, page cache that the kernel may reclaim at will.
const trimEvery = 5 * time.Second

// maybeTrim gives the pages of the database's memory map back to the page
// cache once in a while, so that the daemon's resident memory does not grow
// with the journal's size: bbolt reads through a shared read-only mapping,
// and every page a lookup touched would otherwise stay resident. Pages come
// back from the page cache on the next access (a minor fault); nothing is
// lost, the mapping is never written.
func (j *Journal) maybeTrim() {
	now := time.Now().UnixNano()
	last := j.lastTrim.Load()
	if now-last < int64(trimEvery) || !j.lastTrim.CompareAndSwap(last, now) {
		return
	}
	j.trim()
}

// trim drops the mapping's resident pages. It holds the journal's write
// lock meanwhile (a write transaction that changes nothing and is rolled
// back): bbolt remaps only in a write transaction, so the address range is
// bbolt's mapping throughout. A read transaction would keep the mapping as
// well, but while one lasts no page that a write frees can be used again:
// on a loaded machine, a trim held up for a moment grew the file by the
// pages of every write meanwhile.
func (j *Journal) trim() {
	tx, err := j.db.Begin(true)
	if err != nil {
		return // read-only, or closed
	}
	defer tx.Rollback()
	info := j.db.Info()
	size := uintptr(tx.Size())
	if info.Data == 0 || size == 0 {
		return
	}
	unix.Syscall(unix.SYS_MADVISE, info.Data, size, unix.MADV_DONTNEED)
	if j.trimHeld != nil {
		j.trimHeld()
	}
}
