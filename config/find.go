package config

import (
	"fmt"
	"os"
	"path/filepath"
)

// Find returns the configuration file to read when none is named: the
// first that exists of
//
//	./ostree-upload.yaml
//	$OSTREE_UPLOAD_CONF
//	$XDG_CONFIG_HOME/ostree-upload/ostree-upload.yaml (default ~/.config)
//	/etc/ostree-upload/ostree-upload.yaml
//	$OSTREE_RECEIVE_CONF                              (ostree-push's)
//	$XDG_CONFIG_HOME/ostree/ostree-receive.conf
//	/etc/ostree/ostree-receive.conf
//
// or DefaultFile when none does. A variable naming a file that does not
// exist is an error.
func Find() (string, error) {
	if exists(DefaultFile) {
		return DefaultFile, nil
	}
	for _, c := range []struct{ env, sub, base string }{
		{env: "OSTREE_UPLOAD_CONF"},
		{sub: "ostree-upload", base: "ostree-upload.yaml"},
		{env: "OSTREE_RECEIVE_CONF"},
		{sub: "ostree", base: "ostree-receive.conf"},
	} {
		if c.env != "" {
			path := os.Getenv(c.env)
			if path == "" {
				continue
			}
			if !exists(path) {
				return "", fmt.Errorf("$%s names %s, which does not exist", c.env, path)
			}
			return path, nil
		}
		for _, dir := range configDirs(c.sub) {
			if path := filepath.Join(dir, c.base); exists(path) {
				return path, nil
			}
		}
	}
	return DefaultFile, nil
}
