package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Static deltas: defaults and the limits of each value.
const (
	DefaultStaticDeltaDepth       = 2
	MaxStaticDeltaDepth           = 16
	DefaultStaticDeltaTimeLimit   = time.Hour
	MinStaticDeltaTimeLimit       = time.Second
	MaxStaticDeltaTimeLimit       = 24 * time.Hour
	DefaultStaticDeltaMemoryLimit = 4 * GiB
	// MinStaticDeltaMemoryLimit is about what libostree 2022.7's
	// generation needs whatever the delta: it maps some 370 MiB at once
	// for its compressor, and a small delta failed within 400 MiB.
	MinStaticDeltaMemoryLimit = 512 * MiB
	MaxStaticDeltaMemoryLimit = 1 * TiB
	DefaultStaticDeltaGrace   = 24 * time.Hour
	MinStaticDeltaGrace       = time.Second
	MaxStaticDeltaGrace       = 30 * 24 * time.Hour
)

// staticDeltas parses one of the static_delta* keys into cfg.
func (p *parser) staticDeltas(key string, v *yaml.Node, cfg *Config) error {
	if isNull(v) {
		return nil
	}
	switch key {
	case "static_deltas":
		return p.boolean(v, key, &cfg.StaticDeltas)
	case "static_delta_from_empty":
		return p.boolean(v, key, &cfg.StaticDeltaFromEmpty)
	case "static_delta_depth":
		var n int
		if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(&n) != nil {
			return p.errorf(v, key, "must be a whole number")
		}
		if n < 0 || n > MaxStaticDeltaDepth {
			return p.errorf(v, key, "must be from 0 to %d", MaxStaticDeltaDepth)
		}
		cfg.StaticDeltaDepth = n
	case "static_delta_time_limit", "static_delta_grace":
		d, lo, hi := &cfg.StaticDeltaTimeLimit, MinStaticDeltaTimeLimit, MaxStaticDeltaTimeLimit
		if key == "static_delta_grace" {
			d, lo, hi = &cfg.StaticDeltaGrace, MinStaticDeltaGrace, MaxStaticDeltaGrace
		}
		if err := d.UnmarshalYAML(v); err != nil {
			return p.errorf(v, key, "%v", err)
		}
		if d.Duration < lo || d.Duration > hi {
			return p.errorf(v, key, "must be from %s to %s", shortDuration(lo), shortDuration(hi))
		}
	case "static_delta_memory_limit":
		if err := cfg.StaticDeltaMemoryLimit.UnmarshalYAML(v); err != nil {
			return p.errorf(v, key, "%v", err)
		}
		if cfg.StaticDeltaMemoryLimit < MinStaticDeltaMemoryLimit || cfg.StaticDeltaMemoryLimit > MaxStaticDeltaMemoryLimit {
			return p.errorf(v, key, "must be from %s to %s", MinStaticDeltaMemoryLimit, MaxStaticDeltaMemoryLimit)
		}
	}
	return nil
}

// validateStaticDeltas checks the static_delta* values and that static
// deltas have the built-in update that indexes them in the summary.
func (c *Config) validateStaticDeltas() error {
	switch {
	case c.StaticDeltaDepth < 0 || c.StaticDeltaDepth > MaxStaticDeltaDepth:
		return fmt.Errorf("static_delta_depth must be from 0 to %d", MaxStaticDeltaDepth)
	case c.StaticDeltaTimeLimit.Duration < MinStaticDeltaTimeLimit || c.StaticDeltaTimeLimit.Duration > MaxStaticDeltaTimeLimit:
		return fmt.Errorf("static_delta_time_limit must be from %s to %s", shortDuration(MinStaticDeltaTimeLimit), shortDuration(MaxStaticDeltaTimeLimit))
	case c.StaticDeltaMemoryLimit < MinStaticDeltaMemoryLimit || c.StaticDeltaMemoryLimit > MaxStaticDeltaMemoryLimit:
		return fmt.Errorf("static_delta_memory_limit must be from %s to %s", MinStaticDeltaMemoryLimit, MaxStaticDeltaMemoryLimit)
	case c.StaticDeltaGrace.Duration < MinStaticDeltaGrace || c.StaticDeltaGrace.Duration > MaxStaticDeltaGrace:
		return fmt.Errorf("static_delta_grace must be from %s to %s", shortDuration(MinStaticDeltaGrace), shortDuration(MaxStaticDeltaGrace))
	case !c.StaticDeltas:
		return nil
	case !c.Update || len(c.UpdateHook) > 0:
		return errors.New("static_deltas needs the built-in update, which indexes the deltas in the summary: set update to true and remove update_hook, or turn static_deltas off")
	case c.StaticDeltaDepth == 0 && !c.StaticDeltaFromEmpty:
		return errors.New("static_deltas with static_delta_depth 0 and without static_delta_from_empty would generate no delta: set static_delta_depth to 1 or more, or static_delta_from_empty to true")
	}
	return nil
}

// shortDuration writes d without trailing zero units: 24h, not 24h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
