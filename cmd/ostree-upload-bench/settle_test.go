package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSettleReadsTheRepositoryAndWaitsForDeletionsToAge(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"config", "objects/ab/cd.filez", "objects/ef/01.dirtree"} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("config", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	n, err := readAll(context.Background(), root)
	if err != nil || n != 3 {
		t.Fatalf("readAll = %d, %v; want the 3 regular files", n, err)
	}
	if _, err := readAll(context.Background(), filepath.Join(root, "missing")); err == nil {
		t.Fatal("readAll of a missing directory succeeded")
	}

	b := &bench{}
	b.lastDeletion = time.Now().Add(-deletionAge + 300*time.Millisecond)
	start := time.Now()
	if err := b.settle(context.Background(), root); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("settle returned after %v, before the last deletion was %v old", d, deletionAge)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.deleted()
	if err := b.settle(ctx, root); err == nil {
		t.Fatal("settle waited out a cancelled context")
	}
}
