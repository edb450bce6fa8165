package fetch

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseNetrc(t *testing.T) {
	n, err := ParseNetrc(`# comment line
machine pypi.example.com login alice password "p a\"ss"
machine Files.Example.com
  login bob
  password s3cret # trailing comment
  account acct
macdef init
cd /pub
get file

machine after.macro login carol password c
default login anon password guest
`)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		host, login, pass string
	}{
		{"pypi.example.com", "alice", `p a"ss`},
		{"files.example.com", "bob", "s3cret"},
		{"after.macro", "carol", "c"},
		{"other.host", "anon", "guest"},
	}
	for _, c := range cases {
		m, ok := n.Lookup(c.host)
		if !ok || m.Login != c.login || m.Password != c.pass {
			t.Errorf("Lookup(%q) = %+v %v, want %s/%s", c.host, m, ok, c.login, c.pass)
		}
	}
	if m, _ := n.Lookup("files.example.com"); m.Account != "acct" {
		t.Errorf("account = %q", m.Account)
	}
}

func TestParseNetrcErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"machine a login", "line 1: \"login\" needs a value"},
		{"login x", "line 1: \"login\" before any"},
		{"machine a\nfrobnicate x", "line 2: unknown netrc keyword \"frobnicate\""},
		{"machine a password \"open", "line 1: unterminated quoted token"},
		{"default login x\nmachine b", "line 2: \"machine\" after \"default\""},
	} {
		_, err := ParseNetrc(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseNetrc(%q) error %v, want %q", c.in, err, c.want)
		}
	}
}

func FuzzParseNetrc(f *testing.F) {
	f.Add("machine a login b password c\ndefault login d password e\n")
	f.Add("macdef x\nline\n\nmachine m login \"q\\\\\\\"\" password p")
	f.Add("# c\n\"unterminated")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseNetrc(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "line ") {
				t.Fatalf("error without a line number: %v", err)
			}
			return
		}
		for _, m := range n.Machines {
			got, ok := n.Lookup(m.Name)
			if !ok || !strings.EqualFold(got.Name, m.Name) {
				t.Fatalf("machine %q not found by its own name", m.Name)
			}
		}
	})
}

func TestCredentialSources(t *testing.T) {
	dir := t.TempDir()
	netrc := filepath.Join(dir, "netrc")
	if err := os.WriteFile(netrc, []byte("machine idx.example.com login n password np\ndefault login d password dp\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"VOLBOOT_AUTH_MIRROR_EXAMPLE_COM": "tok123",
		"VOLBOOT_AUTH_IDX_EXAMPLE_COM":    "envuser:envpass",
		"HF_TOKEN":                        "hf_abc",
	}
	c, err := LoadCredentials(CredentialSources{Getenv: func(k string) string { return env[k] }, NetrcPath: netrc, HFHost: "huggingface.co"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ host, header string }{
		{"mirror.example.com", "Bearer tok123"},
		{"IDX.example.com", "Basic ZW52dXNlcjplbnZwYXNz"}, // env beats netrc
		{"huggingface.co", "Bearer hf_abc"},               // HF_TOKEN for the HF host only
		{"cdn-lfs.huggingface.co", "Basic ZDpkcA=="},      // not HF_TOKEN: netrc default
		{"other.example.com", "Basic ZDpkcA=="},           // netrc default
	} {
		cr, ok := c.For(tc.host)
		if !ok || cr.header() != tc.header {
			t.Errorf("For(%q) = %q %v, want %q", tc.host, cr.header(), ok, tc.header)
		}
		if strings.Contains(cr.String(), "pass") || strings.Contains(cr.String(), "tok123") || strings.Contains(cr.String(), "hf_abc") {
			t.Errorf("Credential.String leaks: %s", cr)
		}
	}
	if got := AuthEnvName("my-mirror.local:8443"); got != "VOLBOOT_AUTH_MY_MIRROR_LOCAL_8443" {
		t.Errorf("AuthEnvName = %q", got)
	}
	if _, err := LoadCredentials(CredentialSources{Getenv: func(string) string { return "" }, NetrcPath: filepath.Join(dir, "missing")}); err != nil {
		t.Errorf("missing netrc: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("machine\n"), 0o600)
	if _, err := LoadCredentials(CredentialSources{NetrcPath: bad}); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("malformed netrc: %v", err)
	}
}

func TestPreflight(t *testing.T) {
	dir := t.TempDir()
	done := Item{Size: 1000, Dest: filepath.Join(dir, "a.whl")}
	os.WriteFile(done.Dest, make([]byte, 1000), 0o644)
	half := Item{Size: 1000, Dest: filepath.Join(dir, "b.whl")}
	os.WriteFile(PartPath(half.Dest), make([]byte, 400), 0o644)
	fresh := Item{Size: 5000, Dest: filepath.Join(dir, "c.whl")}
	items := []Item{done, half, fresh}
	if got := BytesNeeded(items, 700); got != 600+5000+700 {
		t.Fatalf("BytesNeeded = %d, want %d", got, 6300)
	}
	// With a volume size, free = size - what the tree holds (>= 1400 bytes
	// of data, in whole blocks).
	err := Preflight(items, 700, dir, 10_000)
	if err == nil {
		t.Fatal("10 kB volume holding ~8 kB of blocks accepted 6.3 kB more")
	}
	se, ok := err.(*SpaceError)
	if !ok || se.Need != 6300 || !strings.Contains(err.Error(), "need 6.2 KiB more") || !strings.Contains(err.Error(), "free") {
		t.Fatalf("error %v", err)
	}
	if err := Preflight(items, 700, dir, 1<<30); err != nil {
		t.Fatalf("1 GiB volume: %v", err)
	}
	if err := Preflight(items, 700, dir, 0); err != nil {
		t.Fatalf("statfs: %v", err)
	}
	if err := Preflight(items, 1<<62, dir, 0); err == nil || !strings.Contains(err.Error(), "statfs") {
		t.Fatalf("statfs refusal: %v", err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"50G": 50 << 30, "50GB": 50 << 30, "50GiB": 50 << 30, "1.5t": 3 << 39, "1048576": 1 << 20, "12 M": 12 << 20} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1G", "lots", "1e30P", "NaN"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"50G", "1.5TiB", "0", "9999999999P"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := ParseSize(s); err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
	})
}

func TestDiskUsageCountsHardLinksOnce(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	os.MkdirAll(store, 0o755)
	big := filepath.Join(store, "torch.so")
	if err := os.WriteFile(big, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	before, err := diskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		gen := filepath.Join(dir, "envs", fmt.Sprint(i), "lib")
		os.MkdirAll(gen, 0o755)
		if err := os.Link(big, filepath.Join(gen, "torch.so")); err != nil {
			t.Skip("no hard links here:", err)
		}
	}
	after, err := diskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if after < 4<<20 || after-before > 1<<20 {
		t.Fatalf("usage %d before links, %d after three hard links of a 4 MiB file: links counted again", before, after)
	}
}
