// Package readiness decides when a started handler is ready to serve, as
// the manifest's [run].ready says: "notify" (the handler sends READY=1 on
// NOTIFY_SOCKET), "started" (ready as soon as it has started) or an
// http:// URL polled until it answers 200.
package readiness

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Kind is the readiness method.
type Kind int

const (
	Started Kind = iota // ready once the process has started
	Notify              // READY=1 on NOTIFY_SOCKET
	HTTP                // GET URL until 200
)

// Spec is a parsed [run].ready value.
type Spec struct {
	Kind Kind
	URL  string // for HTTP
}

// String is the manifest form.
func (s Spec) String() string {
	switch s.Kind {
	case Notify:
		return "notify"
	case HTTP:
		return s.URL
	default:
		return "started"
	}
}

// Parse reads a [run].ready value. The error names the value and lists the
// accepted forms; "" means "started".
func Parse(v string) (Spec, error) {
	switch v {
	case "", "started":
		return Spec{Kind: Started}, nil
	case "notify":
		return Spec{Kind: Notify}, nil
	}
	if strings.HasPrefix(v, "http://") {
		u, err := url.Parse(v)
		if err != nil || u.Host == "" || u.User != nil || u.Fragment != "" {
			return Spec{}, fmt.Errorf("ready = %q: not a usable http:// URL (want e.g. http://127.0.0.1:8000/ping, no user info or fragment)", v)
		}
		return Spec{Kind: HTTP, URL: u.String()}, nil
	}
	return Spec{}, fmt.Errorf(`ready = %q: want "notify", "started" or an http:// URL such as http://127.0.0.1:8000/ping`, v)
}

// PollHTTP requests url with client every interval until one answer is 200
// (returns nil) or ctx ends (returns ctx's error). Each attempt is bounded
// by interval*4 (at least 1 s) so a hung handler cannot stall polling.
// Failures are logged at debug level only: a handler that is still loading
// is expected to refuse connections.
func PollHTTP(ctx context.Context, client *http.Client, url string, interval time.Duration, logger *zap.Logger) error {
	per := 4 * interval
	if per < time.Second {
		per = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if ok := probe(ctx, client, url, per, logger); ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func probe(ctx context.Context, client *http.Client, url string, timeout time.Duration, logger *zap.Logger) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		logger.Debug("readiness probe failed", zap.String("url", url), zap.Error(err))
		return false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		logger.Debug("readiness probe not ready", zap.String("url", url), zap.Int("status", resp.StatusCode))
	}
	return resp.StatusCode == http.StatusOK
}
