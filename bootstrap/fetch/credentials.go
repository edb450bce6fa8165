package fetch

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// Credential is what one host gets in its Authorization header: HTTP Basic
// when Username or Password is set, else a bearer Token.
type Credential struct {
	Username, Password string
	Token              string
}

func (c Credential) header() string {
	if c.Token != "" && c.Username == "" && c.Password == "" {
		return "Bearer " + c.Token
	}
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(c.Username+":"+c.Password))
}

// String never shows the secret, so a Credential that reaches a log by
// mistake leaks nothing.
func (c Credential) String() string {
	if c.Username != "" {
		return "basic(" + c.Username + ":REDACTED)"
	}
	return "bearer(REDACTED)"
}

// Credentials maps a host name to its credential. Lookups, in order:
//
//  1. the environment variable AuthEnvName(host): "user:password" means
//     HTTP Basic, a value without ':' is a bearer token;
//  2. HF_TOKEN (bearer) when host is the Hugging Face endpoint's host;
//  3. the ~/.netrc entry for the host ("machine"), then its "default".
//
// Matching is by exact host name (no port, case-insensitive): a credential
// for huggingface.co is not sent to cdn-lfs.huggingface.co. A nil
// *Credentials has no credentials. Safe for concurrent use (read-only after
// LoadCredentials).
type Credentials struct {
	getenv func(string) string
	hfHost string
	netrc  *Netrc
}

// CredentialSources says where LoadCredentials looks.
type CredentialSources struct {
	// Getenv reads the environment (os.Getenv when nil).
	Getenv func(string) string
	// NetrcPath is the netrc file; empty means $NETRC, else ~/.netrc. A
	// missing file is not an error.
	NetrcPath string
	// HFHost is the host name of $HF_ENDPOINT (e.g. "huggingface.co"); empty
	// disables HF_TOKEN.
	HFHost string
}

// LoadCredentials reads the netrc file (strictly: a malformed file is an
// error naming its line) and remembers where to look for the rest.
func LoadCredentials(src CredentialSources) (*Credentials, error) {
	getenv := src.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	path := src.NetrcPath
	if path == "" {
		path = getenv("NETRC")
	}
	implicit := false // ~/.netrc, which nobody asked for by name
	if path == "" {
		if home := getenv("HOME"); home != "" {
			path, implicit = home+"/.netrc", true
		}
	}
	c := &Credentials{getenv: getenv, hfHost: strings.ToLower(src.HFHost)}
	if path != "" {
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			n, err := ParseNetrc(string(b))
			if err != nil {
				return nil, fmt.Errorf("netrc %s: %w", path, err)
			}
			c.netrc = n
		case errors.Is(err, fs.ErrNotExist):
		case implicit && errors.Is(err, fs.ErrPermission) && unseen(path):
			// HOME itself is closed to this user (a container running
			// as nobody with HOME=/root): no netrc it can see is no
			// netrc. A file it can see but not read is still an error.
		default:
			return nil, fmt.Errorf("read netrc: %w", err)
		}
	}
	return c, nil
}

// AuthEnvName is the environment variable that holds the credential for
// host: "VOLBOOT_AUTH_" + the host name upper-cased with every character
// other than A-Z and 0-9 replaced by '_'. pypi.example.com ->
// VOLBOOT_AUTH_PYPI_EXAMPLE_COM; my-mirror.local -> VOLBOOT_AUTH_MY_MIRROR_LOCAL.
// (Hosts that differ only in punctuation share a variable.)
func AuthEnvName(host string) string {
	var b strings.Builder
	b.WriteString("VOLBOOT_AUTH_")
	for _, r := range strings.ToUpper(host) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// For returns the credential for host (a name without port).
func (c *Credentials) For(host string) (Credential, bool) {
	if c == nil || host == "" {
		return Credential{}, false
	}
	host = strings.ToLower(host)
	if v := c.getenv(AuthEnvName(host)); v != "" {
		if u, p, ok := strings.Cut(v, ":"); ok {
			return Credential{Username: u, Password: p}, true
		}
		return Credential{Token: v}, true
	}
	if c.hfHost != "" && host == c.hfHost {
		if tok := c.getenv("HF_TOKEN"); tok != "" {
			return Credential{Token: tok}, true
		}
	}
	if c.netrc != nil {
		if m, ok := c.netrc.Lookup(host); ok && (m.Login != "" || m.Password != "") {
			return Credential{Username: m.Login, Password: m.Password}, true
		}
	}
	return Credential{}, false
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// unseen reports whether path cannot even be looked up (its directory is
// not searchable), as opposed to existing and being unreadable.
func unseen(path string) bool {
	_, err := os.Lstat(path)
	return errors.Is(err, fs.ErrPermission)
}
