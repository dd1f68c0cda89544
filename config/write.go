package config

import (
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// Marshal writes the configuration as a file Load reads back to the same
// values, every key spelled out.
func (c *Config) Marshal() ([]byte, error) {
	proxies := make([]string, len(c.TrustedProxies))
	for i, p := range c.TrustedProxies {
		proxies[i] = p.String()
	}
	hook := make([]string, len(c.UpdateHook))
	for i, a := range c.UpdateHook {
		hook[i] = shellQuote(a)
	}
	doc := struct {
		Repo                 string   `yaml:"repo"`
		Address              string   `yaml:"address"`
		StateDir             string   `yaml:"state_dir,omitempty"`
		SessionTTL           Duration `yaml:"session_ttl"`
		SessionRetention     Duration `yaml:"session_retention,omitempty"`
		BodyTimeout          Duration `yaml:"body_timeout"`
		MaxObjectsPerSession int      `yaml:"max_objects_per_session"`
		MaxObjectSize        Size     `yaml:"max_object_size"`
		MaxPackSize          Size     `yaml:"max_pack_size"`
		MaxSessionsPerToken  int      `yaml:"max_sessions_per_token"`
		MaxObjectsPerToken   int      `yaml:"max_objects_per_token"`
		MaxConnections       int      `yaml:"max_connections"`
		MaxClientConnections int      `yaml:"max_connections_per_client"`
		GPGSign              []string `yaml:"gpg_sign,omitempty"`
		GPGHomedir           string   `yaml:"gpg_homedir,omitempty"`
		GPGVerify            bool     `yaml:"gpg_verify"`
		GPGTrustedKeys       string   `yaml:"gpg_trustedkeys,omitempty"`
		SignType             string   `yaml:"sign_type,omitempty"`
		SignKeyfiles         []string `yaml:"sign_keyfiles,omitempty"`
		SignVerify           bool     `yaml:"sign_verify"`
		SignTrustedKeyfile   string   `yaml:"sign_trustedkeyfile,omitempty"`
		Update               bool     `yaml:"update"`
		UpdateHook           string   `yaml:"update_hook,omitempty"`
		TrustedProxies       []string `yaml:"trusted_proxies,omitempty"`
		Tokens               []Token  `yaml:"tokens,omitempty"`
	}{
		c.Repo, c.Address, c.StateDir, c.SessionTTL, c.SessionRetention, c.BodyTimeout,
		c.MaxObjectsPerSession, c.MaxObjectSize, c.MaxPackSize, c.MaxSessionsPerToken, c.MaxObjectsPerToken,
		c.MaxConnections, c.MaxClientConnections,
		c.GPGSign, c.GPGHomedir, c.GPGVerify, c.GPGTrustedKeys, c.SignType, c.SignKeyfiles, c.SignVerify, c.SignTrustedKeyfile,
		c.Update, strings.Join(hook, " "), proxies, c.Tokens,
	}
	return yaml.Marshal(doc)
}

// Write writes the configuration to path (mode 0600), replacing it.
func (c *Config) Write(path string) error {
	b, err := c.Marshal()
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.WriteFile(path, b, 0o600)
}

// shellQuote quotes an argument so that SplitCommand gives it back.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`#") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}
