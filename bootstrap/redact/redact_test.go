package redact

import (
	"net/http"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for _, c := range []struct{ in, secret string }{
		{"https://alice:hunter2@pypi.example/simple/", "hunter2"},
		{"https://cdn.example/blob?X-Amz-Signature=abcdef123&X-Amz-Date=1", "abcdef123"},
		{"https://h.example/x?token=sekrit", "sekrit"},
		{"https://bob:p%zz@host/x", "p%zz"}, // does not parse
		{"https://onlyuser@host/x", "onlyuser"},
	} {
		got := URL(c.in)
		if strings.Contains(got, c.secret) {
			t.Errorf("URL(%q) = %q still holds %q", c.in, got, c.secret)
		}
	}
	if got := URL("https://pypi.example/simple/torch/?page=2"); got != "https://pypi.example/simple/torch/?page=2" {
		t.Errorf("harmless URL changed: %q", got)
	}
}

func TestHeader(t *testing.T) {
	h := http.Header{"Authorization": {"Bearer hf_abc"}, "Accept": {"*/*"}}
	r := Header(h)
	if r.Get("Authorization") != Mask || r.Get("Accept") != "*/*" {
		t.Fatalf("Header = %v", r)
	}
	if h.Get("Authorization") != "Bearer hf_abc" {
		t.Fatal("Header modified its input")
	}
}
