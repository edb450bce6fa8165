package fetch

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/volboot/volboot/integration/testindex"
)

// closedURL is a URL on a loopback port nothing listens on: every
// connection is refused at once.
func closedURL(t *testing.T, path string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr + path
}

// urlLines are the lines at Info or above that name url, and the debug
// lines that do.
func urlLines(logs *observer.ObservedLogs, url string) (shown, debug []observer.LoggedEntry) {
	for _, e := range logs.FilterField(zap.String("url", url)).All() {
		if e.Level >= zap.InfoLevel {
			shown = append(shown, e)
		} else {
			debug = append(debug, e)
		}
	}
	return shown, debug
}

// An unreachable index costs one line per URL, with the attempt count and
// the last error, not one per attempt; each attempt is a debug line.
func TestRetriesAgainstAnUnreachableHostLogOneLinePerURL(t *testing.T) {
	e := newEnv(t)
	f := e.fetcher(nil)
	var items []Item
	for _, name := range []string{"a", "b", "c"} {
		items = append(items, Item{Name: name, URLs: []string{closedURL(t, "/files/"+name+".whl")}, Size: 10,
			Digest: Digest{Kind: SizeOnly}, Dest: filepath.Join(e.dir, name+".whl")})
	}
	if _, err := f.Fetch(context.Background(), items); err == nil {
		t.Fatal("fetched from a closed port")
	}
	for _, it := range items {
		shown, debug := urlLines(e.logs, it.URLs[0])
		if len(shown) != 1 {
			t.Errorf("%s: %d lines at info or above, want 1: %+v", it.Name, len(shown), shown)
			continue
		}
		l := shown[0]
		msg := l.ContextMap()["error"]
		if l.Level != zap.WarnLevel || l.ContextMap()["attempts"] != int64(5) ||
			!strings.Contains(fmt.Sprint(msg), "5 attempts failed") || !strings.Contains(fmt.Sprint(msg), "connection refused") {
			t.Errorf("%s: %s %q %v, want a warning with 5 attempts and the last error", it.Name, l.Level, l.Message, l.ContextMap())
		}
		if len(debug) < 4 {
			t.Errorf("%s: %d debug lines, want one per retried attempt", it.Name, len(debug))
		}
	}
}

// A download that succeeds after failed attempts says so once, at info.
func TestRecoveredDownloadLogsOneLine(t *testing.T) {
	e := newEnv(t)
	data, it := e.addFile("rec-1.0-py3-none-any.whl", 10_000)
	e.fault(it.Name, testindex.Fault{Status: 503, Times: 3})
	if err := fetchOne(t, e.fetcher(nil), it); err != nil {
		t.Fatal(err)
	}
	assertFinal(t, it, data)
	shown, debug := urlLines(e.logs, it.URLs[0])
	if len(shown) != 1 || shown[0].Level != zap.InfoLevel || !strings.Contains(shown[0].Message, "3 failed attempts") ||
		!strings.Contains(fmt.Sprint(shown[0].ContextMap()["last_error"]), "HTTP 503") {
		t.Errorf("lines at info or above %+v, want one info line naming 3 failed attempts and the last error", shown)
	}
	if len(debug) != 3 {
		t.Errorf("%d debug lines, want one per failed attempt", len(debug))
	}
}
