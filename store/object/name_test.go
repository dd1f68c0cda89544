package object

import (
	"strings"
	"testing"
)

func TestObjectNames(t *testing.T) {
	t.Parallel()
	good := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, ext := range []string{"filez", "dirtree", "dirmeta", "commit", "commitmeta"} {
		n, err := ParseName(good + "." + ext)
		if err != nil || n.String() != good+"."+ext {
			t.Fatalf("ParseObjectName(%s) = %v, %v", ext, n, err)
		}
		if p, err := ParsePath(n.RelPath()); err != nil || p != n {
			t.Fatalf("ParseObjectPath(%s) = %v, %v", n.RelPath(), p, err)
		}
	}
	for _, bad := range []string{
		good, good + ".file", good + ".FILEZ", strings.ToUpper(good) + ".filez", good[:63] + ".filez",
		good + "0.filez", "../" + good[3:] + ".filez", good[:62] + "/x.filez", good + ".filez.x", "",
	} {
		if _, err := ParseName(bad); err == nil {
			t.Errorf("ParseObjectName(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"objects/01/" + good + ".filez", "objects/0/" + good[1:] + ".filez", "/objects/01/" + good[2:] + ".filez", "objects/01/../" + good[2:] + ".filez"} {
		if _, err := ParsePath(bad); err == nil {
			t.Errorf("ParseObjectPath(%q) accepted", bad)
		}
	}
}
