package locallayout

import (
	"strings"
	"testing"
)

func FuzzParsePackName(f *testing.F) {
	f.Add(PackName("0123456789abcdef0123", strings.Repeat("a", 64)))
	f.Add(".x-y.pack.vbtmp.host.1.abc")
	f.Add("-" + strings.Repeat("b", 64) + ".pack")
	f.Fuzz(func(t *testing.T, name string) {
		gen, sha, ok := ParsePackName(name)
		if !ok {
			return
		}
		// What parses names a generation and a 64-character digest, and
		// is the name PackName makes of them.
		if gen == "" || len(sha) != 64 || PackName(gen, sha) != name {
			t.Fatalf("%q parsed as %q, %q", name, gen, sha)
		}
	})
}
