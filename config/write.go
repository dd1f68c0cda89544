package config

import (
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// Marshal writes the configuration as a file Load reads back to the same
// values, every key spelled out (but repo, which a file with root does not
// have).
func (c *Config) Marshal() ([]byte, error) {
	if c.Root != "" {
		d := *c
		d.Repo = ""
		return yaml.Marshal(&d)
	}
	return yaml.Marshal(c)
}

// Write writes the configuration to path (mode 0600), replacing it.
func (c *Config) Write(path string) error {
	b, err := c.Marshal()
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.WriteFile(path, b, 0o600)
}

// Command is a command line: the program and its arguments, written in
// the file as one string split as a shell would (without expansion).
type Command []string

// MarshalYAML implements yaml.Marshaler: the arguments quoted so that
// SplitCommand gives them back.
func (c Command) MarshalYAML() (any, error) {
	quoted := make([]string, len(c))
	for i, a := range c {
		quoted[i] = shellQuote(a)
	}
	return strings.Join(quoted, " "), nil
}

// shellQuote quotes an argument so that SplitCommand gives it back.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`#") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}
