package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/ostree-upload/ostree-upload/api"
)

// FuzzUploadPath: the only upload paths admitted are /<32 hex>/<32 hex>.
func FuzzUploadPath(f *testing.F) {
	id := strings.Repeat("0f", 16)
	for _, s := range []string{"/" + id + "/" + id, "/" + id + "/../" + id, "/" + id + "%2F" + id, "/" + strings.ToUpper(id) + "/" + id, "/" + id} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m := uploadPath.FindStringSubmatch(s)
		if m == nil {
			return
		}
		if s != "/"+m[1]+"/"+m[2] || len(m[1]) != 32 || len(m[2]) != 32 || strings.Trim(m[1]+m[2], "0123456789abcdef") != "" {
			t.Fatalf("%q admitted as %q/%q", s, m[1], m[2])
		}
	})
}

// FuzzDecodeJSON: API request bodies decode strictly or not at all, never
// panic, and what decodes survives a round trip.
func FuzzDecodeJSON(f *testing.F) {
	f.Add([]byte(`{"refs":[{"name":"main","new":"` + strings.Repeat("a", 64) + `"}],"force":true}`))
	f.Add([]byte(`{"objects":["` + strings.Repeat("b", 64) + `.filez"]}`))
	f.Add([]byte(`{"refs":[]}{}`))
	f.Add([]byte(`{"refs":null,"x":1}`))
	e := echo.New()
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v := range []any{&api.SessionRequest{}, &api.ObjectsRequest{}} {
			c := e.NewContext(httptest.NewRequest("POST", "/", bytes.NewReader(body)), httptest.NewRecorder())
			if err := decodeJSON(c, v); err != nil {
				continue
			}
			again, _ := json.Marshal(v)
			c = e.NewContext(httptest.NewRequest("POST", "/", bytes.NewReader(again)), httptest.NewRecorder())
			if err := decodeJSON(c, v); err != nil {
				t.Fatalf("%s decoded, but its re-encoding %s does not: %v", body, again, err)
			}
		}
	})
}
