// Package redact removes secrets from values before they reach a log line,
// an error message or a status report.
//
// Secrets volboot handles: URL userinfo (https://user:pass@host/), signed
// query parameters of CDN redirects (X-Amz-Signature, token=...), and
// Authorization / Cookie style headers. Everything that logs a URL or a
// header passes it through this package first; the functions never fail, so
// there is no excuse to skip them.
package redact

import (
	"net/http"
	"net/url"
	"strings"
)

// Mask replaces a secret value.
const Mask = "REDACTED"

// URL returns raw with its userinfo and the values of secret-looking query
// parameters replaced by Mask. A string that does not parse as a URL is
// returned with anything between "://" and "@" masked, so that even a
// malformed URL from a manifest leaks no password into an error message.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return maskUserinfo(raw)
	}
	if u.User != nil {
		u.User = url.User(Mask)
	}
	if u.RawQuery != "" {
		q := u.Query()
		changed := false
		for k := range q {
			if secretKey(k) {
				q[k] = []string{Mask}
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	return u.String()
}

func maskUserinfo(raw string) string {
	i := strings.Index(raw, "://")
	if i < 0 {
		return raw
	}
	rest := raw[i+3:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
		return raw[:i+3] + Mask + rest[at:]
	}
	return raw
}

// secretKey reports whether a query parameter or header name usually carries
// a credential.
func secretKey(k string) bool {
	k = strings.ToLower(k)
	for _, s := range []string{"token", "signature", "sig", "secret", "password", "passwd", "auth", "credential", "key", "cookie", "session"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// Header returns a copy of h with the values of credential headers masked.
func Header(h http.Header) http.Header {
	out := make(http.Header, len(h))
	for k, v := range h {
		if secretKey(k) {
			out[k] = []string{Mask}
			continue
		}
		out[k] = append([]string(nil), v...)
	}
	return out
}
