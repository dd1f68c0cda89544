package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a positive time.Duration written in YAML as a Go duration
// string such as "24h" or "90m".
type Duration struct{ time.Duration }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("must be a duration like 24h or 90m")
	}
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil {
		return fmt.Errorf("%q is not a duration like 24h or 90m", n.Value)
	}
	if v <= 0 {
		return errors.New("must be a positive duration")
	}
	d.Duration = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Size is a number of bytes, written in YAML as an integer or as a string
// with a unit: B, KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB
// (powers of 1000), e.g. "16GiB", "500MB", 1048576.
type Size int64

// Size units.
const (
	B   Size = 1
	KiB      = 1024 * B
	MiB      = 1024 * KiB
	GiB      = 1024 * MiB
	TiB      = 1024 * GiB
	KB       = 1000 * B
	MB       = 1000 * KB
	GB       = 1000 * MB
	TB       = 1000 * GB
)

var sizeUnits = map[string]Size{
	"": B, "B": B,
	"KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB,
	"KB": KB, "kB": KB, "MB": MB, "GB": GB, "TB": TB,
}

// ParseSize parses a byte count with an optional unit, such as "16GiB",
// "500MB", "512 KiB" or "1048576".
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	unit, ok := sizeUnits[strings.TrimSpace(s[i:])]
	if i == 0 || !ok {
		return 0, fmt.Errorf("%q is not a size like 16GiB, 500MB or a number of bytes", s)
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil || Size(n) > Size(math.MaxInt64)/unit {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(n) * unit, nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("must be a size like 16GiB, 500MB or a number of bytes")
	}
	if n.ShortTag() == "!!int" {
		var v int64
		if err := n.Decode(&v); err != nil {
			return fmt.Errorf("%q is not a number of bytes", n.Value)
		}
		if v < 0 {
			return errors.New("must not be negative")
		}
		*s = Size(v)
		return nil
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }

// String gives the size in the largest binary unit that divides it
// exactly, e.g. "16GiB", or in bytes, e.g. "1000B".
func (s Size) String() string {
	for _, u := range []struct {
		name string
		size Size
	}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if s != 0 && s%u.size == 0 {
			return strconv.FormatInt(int64(s/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}
