package journal

import (
	"bufio"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// mappedKiB is the resident size of this process's mappings of path.
func mappedKiB(t *testing.T, path string) int {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skip("no /proc/self/smaps")
	}
	defer f.Close()
	total, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = len(fields) >= 6 && fields[5] == path // a mapping's first line
		} else if in && len(fields) == 3 && fields[0] == "Rss:" {
			n, _ := strconv.Atoi(fields[1])
			total += n
		}
	}
	return total
}

func TestTrimReleasesMappedPages(t *testing.T) {
	ctx := context.Background()
	j, path := mustOpen(t)
	s := mustSession(t, j, ownerA, "r")
	for i := 0; i < 40000; i += 10000 {
		if _, err := j.Need(ctx, s.ID, objs(i, i+10000), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Touch every page, bypassing the journal's own trimming.
	j.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			return b.ForEachBucket(func(k []byte) error {
				return b.Bucket(k).ForEach(func(_, _ []byte) error { return nil })
			})
		})
	})
	before := mappedKiB(t, path)
	j.trim()
	after := mappedKiB(t, path)
	if before < 1024 || after > before/8 {
		t.Fatalf("journal mapping resident: %d KiB before trim, %d KiB after", before, after)
	}
	// Everything reads back.
	if need, err := j.Need(ctx, s.ID, objs(0, 40000), 0); err != nil || len(need) != 40000 {
		t.Fatalf("after trim: %d needed, %v", len(need), err)
	}
}
