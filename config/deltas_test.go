package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Static deltas are off by default; every static_delta* key is read at the
// top level and in a repos entry, which overrides it for its repository.
func TestStaticDeltaKeys(t *testing.T) {
	noDefaultKeyrings(t)
	d := Default()
	if d.StaticDeltas || d.StaticDeltaFromEmpty || d.StaticDeltaDepth != 2 || d.StaticDeltaTimeLimit.Duration != time.Hour ||
		d.StaticDeltaMemoryLimit != 4*GiB || d.StaticDeltaGrace.Duration != 24*time.Hour {
		t.Fatalf("defaults: %+v", d)
	}
	root := t.TempDir()
	cfg, err := Load(writeFile(t, `root: `+root+`
static_deltas: yes
static_delta_depth: 3
static_delta_time_limit: 10m
static_delta_memory_limit: 2GiB
static_delta_grace: 2h
repos:
  beta:
    static_delta_depth: 1
    static_delta_from_empty: true
    static_delta_memory_limit: 8GiB
    static_delta_grace: 1s
  stable:
    static_deltas: false
`))
	if err != nil {
		t.Fatal(err)
	}
	repos, err := cfg.Repositories()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*Config{}
	for _, r := range repos {
		byName[r.Name] = r.Config
	}
	beta, stable := byName["beta"], byName["stable"]
	if !beta.StaticDeltas || beta.StaticDeltaDepth != 1 || !beta.StaticDeltaFromEmpty || beta.StaticDeltaTimeLimit.Duration != 10*time.Minute ||
		beta.StaticDeltaMemoryLimit != 8*GiB || beta.StaticDeltaGrace.Duration != time.Second {
		t.Errorf("beta: %+v", beta)
	}
	if stable.StaticDeltas || stable.StaticDeltaDepth != 3 || stable.StaticDeltaMemoryLimit != 2*GiB || stable.StaticDeltaGrace.Duration != 2*time.Hour {
		t.Errorf("stable: %+v", stable)
	}
	// Written and read back.
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := beta.Write(path); err != nil {
		t.Fatal(err)
	}
	back, err := Load(path)
	if err != nil || !back.StaticDeltas || back.StaticDeltaDepth != 1 || back.StaticDeltaGrace.Duration != time.Second || back.StaticDeltaMemoryLimit != 8*GiB {
		t.Errorf("written and read back: %+v, %v\n%s", back, err, readFile(t, path))
	}
}

// Each static_delta* value has limits, and a value outside them stops the
// daemon with the file, the line and the key; so do static deltas without
// the built-in update that indexes them.
func TestStaticDeltaLimits(t *testing.T) {
	noDefaultKeyrings(t)
	for _, c := range []struct{ content, key, msg string }{
		{"static_delta_depth: 17\n", "static_delta_depth", "from 0 to 16"},
		{"static_delta_depth: -1\n", "static_delta_depth", "from 0 to 16"},
		{"static_delta_depth: two\n", "static_delta_depth", "whole number"},
		{"static_delta_time_limit: 500ms\n", "static_delta_time_limit", "from 1s to 24h"},
		{"static_delta_time_limit: 25h\n", "static_delta_time_limit", "from 1s to 24h"},
		{"static_delta_memory_limit: 100MiB\n", "static_delta_memory_limit", "from 512MiB to 1TiB"},
		{"static_delta_memory_limit: 2TiB\n", "static_delta_memory_limit", "from 512MiB to 1TiB"},
		{"static_delta_grace: 721h\n", "static_delta_grace", "from 1s to 720h"},
		{"static_delta_grace: 0s\n", "static_delta_grace", "positive"},
		{"static_deltas: maybe\n", "static_deltas", "true or false"},
		{"root: /r\nrepos:\n  beta:\n    static_delta_depth: 99\n", "repos.beta.static_delta_depth", "from 0 to 16"},
	} {
		_, err := Load(writeFile(t, c.content))
		var e *Error
		if !errors.As(err, &e) || e.Key != c.key || !strings.Contains(e.Msg, c.msg) || e.Line == 0 {
			t.Errorf("%q: %v, want %s: …%s…", c.content, err, c.key, c.msg)
		}
	}
	root := t.TempDir()
	for _, c := range []struct{ content, msg string }{
		{"static_deltas: true\nupdate_hook: /bin/true\n", "remove update_hook"},
		{"static_deltas: true\nupdate: false\n", "set update to true"},
		{"static_deltas: true\nstatic_delta_depth: 0\n", "would generate no delta"},
		{"root: " + root + "\nrepos:\n  beta:\n    static_deltas: true\n    update: no\n", `repository "beta": static_deltas needs the built-in update`},
	} {
		cfg, err := Load(writeFile(t, c.content))
		if err == nil {
			_, err = cfg.Repositories()
		}
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%q: %v, want …%s…", c.content, err, c.msg)
		}
	}
	// Depth 0 is fine with deltas from nothing only.
	cfg, err := Load(writeFile(t, "static_deltas: true\nstatic_delta_depth: 0\nstatic_delta_from_empty: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
}
