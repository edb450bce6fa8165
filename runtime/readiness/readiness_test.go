package readiness

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]Spec{
		"":                              {Kind: Started},
		"started":                       {Kind: Started},
		"notify":                        {Kind: Notify},
		"http://127.0.0.1:8000/ping":    {Kind: HTTP, URL: "http://127.0.0.1:8000/ping"},
		"http://localhost:9/health?x=1": {Kind: HTTP, URL: "http://localhost:9/health?x=1"},
	} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if in != "" {
			if back, err := Parse(got.String()); err != nil || back != got {
				t.Errorf("round trip of %q: %+v %v", in, back, err)
			}
		}
	}
	for _, in := range []string{"Notify", "https://x/ping", "http://", "http://u:p@host/", "tcp://x", "ready"} {
		if _, err := Parse(in); err == nil || !strings.Contains(err.Error(), "ready =") {
			t.Errorf("Parse(%q) err = %v", in, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"notify", "started", "http://127.0.0.1:1/p", "http://[::1]:80/", "http://%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := Parse(s)
		if err != nil {
			return
		}
		back, err := Parse(spec.String())
		if err != nil || back != spec {
			t.Fatalf("Parse(%q) = %+v does not round-trip: %+v %v", s, spec, back, err)
		}
	})
}

func TestPollHTTPWaitsFor200(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) < 4 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := PollHTTP(ctx, srv.Client(), srv.URL, 10*time.Millisecond, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 4 {
		t.Errorf("%d probes, want 4", n.Load())
	}
}

func TestPollHTTPStopsWithContext(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent) // initializing is not ready
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := PollHTTP(ctx, srv.Client(), srv.URL, 10*time.Millisecond, zap.NewNop()); err == nil {
		t.Fatal("PollHTTP returned nil for a server never answering 200")
	}
}
