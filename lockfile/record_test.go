package lockfile

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func validHolderJSON() string {
	return `{"schema":1,"holder_id":"h-1-abc","host":"gpu-1","pid":42,"pid_start":7,"pid_ns":"pid:[4026531836]",
"boot_id":"0f2c","mode":"flock","has_flock":true,"epoch":3,"started":"2026-11-28T10:00:00Z",
"updated":"2026-11-28T10:00:05Z","heartbeat":2,"phase":"downloading torch-2.8.0 (45%)"}`
}

func TestParseHolderErrorsNameTheField(t *testing.T) {
	if _, err := ParseHolder([]byte(validHolderJSON())); err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		`{"schema":2}`:            `"schema": 2 is newer`,
		`{}`:                      `"schema": missing`,
		``:                        "empty",
		`[1]`:                     "not a JSON object",
		validHolderJSON() + ` {}`: "data after the record",
		strings.Replace(validHolderJSON(), `"epoch":3`, `"epoch":0`, 1):               `"epoch"`,
		strings.Replace(validHolderJSON(), `"pid":42`, `"pid":-1`, 1):                 `"pid"`,
		strings.Replace(validHolderJSON(), `"mode":"flock"`, `"mode":"nfs"`, 1):       `"mode"`,
		strings.Replace(validHolderJSON(), `"host":"gpu-1"`, `"host":""`, 1):          `"host": missing`,
		strings.Replace(validHolderJSON(), `"holder_id":"h-1-abc"`, `"x":1`, 1):       `"holder_id": missing`,
		strings.Replace(validHolderJSON(), `"pid":42`, `"pid":"42"`, 1):               "invalid JSON",
		strings.Replace(validHolderJSON(), `"boot_id":"0f2c"`, `"boot_id":"a\nb"`, 1): `"boot_id"`,
	}
	for in, want := range cases {
		_, err := ParseHolder([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseHolder(%.60q): %v, want error containing %q", in, err, want)
		}
	}
	// Unknown fields from newer writers are tolerated.
	if _, err := ParseHolder([]byte(strings.Replace(validHolderJSON(), `{`, `{"future":true,`, 1))); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseHolder(bytes.Repeat([]byte(" "), maxRecordSize+1)); err == nil {
		t.Fatal("oversized record accepted")
	}
}

func TestReadHolderNamesDamagedFile(t *testing.T) {
	dir := t.TempDir()
	writeHolder(t, dir, farHolder(1))
	if err := os.WriteFile(filepath.Join(dir, "holder.json"), []byte("{garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := ReadHolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The claim still names the holder.
	if st.Holder == nil || st.FromHolderFile || st.Holder.Host != "far-host" {
		t.Fatalf("%+v", st)
	}
	os.WriteFile(filepath.Join(dir, "claims", "1"), []byte("{garbage"), 0o644)
	st, err = ReadHolder(dir)
	if err != nil || st.Holder != nil || st.Err == nil || !strings.Contains(st.Err.Error(), filepath.Join("claims", "1")) {
		t.Fatalf("%+v %v", st, err)
	}
	empty, err := ReadHolder(filepath.Join(dir, "missing"))
	if err != nil || empty.Epoch != 0 || empty.Holder != nil {
		t.Fatalf("no lock yet: %+v %v", empty, err)
	}
}

func TestParseProcStat(t *testing.T) {
	st, err := parseProcStat([]byte("1234 (a) b) (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 12345 100"))
	if err != nil || st.state == 0 || st.start != 987654 {
		t.Fatalf("%+v %v", st, err)
	}
	if st.state != 'S' {
		t.Fatalf("state %c", st.state)
	}
	for _, bad := range []string{"", "1 (x", "1 (x) S 1 2"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q) accepted", bad)
		}
	}
	self, err := readProcStat("self")
	if err != nil {
		t.Skip("no /proc")
	}
	if self.state != 'R' && self.state != 'S' || self.start == 0 {
		t.Fatalf("self: %+v", self)
	}
}

func TestCleanPhase(t *testing.T) {
	long := strings.Repeat("é", maxPhaseBytes)
	got := cleanPhase(long)
	if len(got) > maxPhaseBytes || !strings.HasPrefix(long, got) {
		t.Fatalf("cut badly: %d bytes", len(got))
	}
	if got := cleanPhase("a\x00b\tc\xff"); got != "a b c?" {
		t.Fatalf("%q", got)
	}
}

func TestCheckWorkerID(t *testing.T) {
	for _, ok := range []string{"pod-abc_1.2", "x"} {
		if err := checkWorkerID(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".hidden", "a/b", "../x", "a b", strings.Repeat("a", 129), "ü"} {
		if err := checkWorkerID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// roundTrip checks that whatever a parser accepts survives being written
// and read back unchanged.
func roundTrip[T any](t *testing.T, data []byte, parse func([]byte) (T, error)) {
	v, err := parse(data)
	if err != nil {
		return
	}
	b1, err := marshalRecord(v)
	if err != nil {
		t.Fatalf("accepted record does not marshal: %v", err)
	}
	v2, err := parse(b1)
	if err != nil {
		t.Fatalf("re-parse of %s: %v", b1, err)
	}
	b2, err := marshalRecord(v2)
	if err != nil || !bytes.Equal(b1, b2) {
		t.Fatalf("round trip changed the record:\n%s\n%s", b1, b2)
	}
}

func FuzzParseHolder(f *testing.F) {
	f.Add([]byte(validHolderJSON()))
	f.Add([]byte(`{"schema":1,"holder_id":"x","host":"h","pid":1,"mode":"lease-only","epoch":18446744073709551615,"started":"0001-01-01T00:00:00Z","updated":"2026-01-01T00:00:00+01:00","released":true}`))
	f.Add([]byte(`{"schema":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, data, ParseHolder)
	})
}

func FuzzParseLease(f *testing.F) {
	f.Add([]byte(`{"schema":1,"worker_id":"pod-1","generation":"abc123","host":"h","pid":7,"started":"2026-11-28T10:00:00Z","updated":"2026-11-28T10:00:00Z","heartbeat":1}`))
	f.Add([]byte(`{"schema":1,"worker_id":".x","generation":"g","host":"h","pid":7}`))
	f.Add([]byte(`{"schema":1,"worker_id":"a","generation":"g","host":"h","pid":7,"started":"10000-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, data, ParseLease)
	})
}

func FuzzParseProcStat(f *testing.F) {
	f.Add([]byte("1234 (a) b) (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 12345 100"))
	f.Add([]byte("1 ()) Z"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseProcStat(data)
		if err == nil && st.state == 0 {
			t.Fatal("accepted without a state")
		}
	})
}

func TestLeaseRules(t *testing.T) {
	dir := t.TempDir()
	ldir := filepath.Join(dir, "leases")
	// A temporary file a crashed worker left long ago goes when the next
	// lease is taken; a fresh one (a write in progress) stays.
	os.MkdirAll(ldir, 0o755)
	oldTmp := filepath.Join(ldir, ".pod-8.json.vbtmp.h.1.abc")
	os.WriteFile(oldTmp, []byte("{"), 0o644)
	os.Chtimes(oldTmp, time.Now().Add(-time.Hour), time.Now().Add(-time.Hour))
	ls, err := HoldLease(t.Context(), LeaseOptions{Dir: dir, WorkerID: "pod-1", Generation: "gen-1", Heartbeat: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, content string, age time.Duration) {
		p := filepath.Join(ldir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		mt := time.Now().Add(-age)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	rec := func(worker, host string) string {
		return `{"schema":1,"worker_id":"` + worker + `","generation":"gen-` + worker + `","host":"` + host + `","pid":99,"started":"2026-11-28T10:00:00Z","updated":"2026-11-28T10:00:00Z","heartbeat":1}`
	}
	write("old.json", rec("old", "far"), 2*time.Minute)
	write("future.json", rec("future", "far"), -time.Hour) // a clock ahead of ours: keep
	write("garbled.json", "{half", 0)
	write("garbled-old.json", "{half", 10*time.Minute)
	write("mismatch.json", rec("other", "far"), 0)
	write("notes.txt", "ignored", 0)
	write(".pod-9.json.vbtmp.h.1.abc", rec("pod-9", "far"), 0)
	all, err := ListLeases(dir, ListOptions{TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]LeaseEntry{}
	for _, e := range all {
		got[e.WorkerID] = e
	}
	want := map[string]bool{"pod-1": true, "old": false, "future": true, "garbled": true, "garbled-old": false, "mismatch": true}
	if len(got) != len(want) {
		t.Fatalf("entries: %+v", all)
	}
	for w, live := range want {
		if got[w].Live != live {
			t.Errorf("%s: live=%v (%s), want %v", w, got[w].Live, got[w].Reason, live)
		}
	}
	if got["pod-1"].Record == nil || got["pod-1"].Record.Generation != "gen-1" {
		t.Errorf("pod-1: %+v", got["pod-1"])
	}
	if got["garbled"].Err == nil || got["garbled"].Record != nil || got["mismatch"].Err == nil ||
		!strings.Contains(got["mismatch"].Err.Error(), "does not match the file name") {
		t.Errorf("errors: %v / %v", got["garbled"].Err, got["mismatch"].Err)
	}
	if _, err := os.Stat(oldTmp); !os.IsNotExist(err) {
		t.Errorf("stale temporary lease file kept: %v", err)
	}
	if _, err := os.Stat(filepath.Join(ldir, ".pod-9.json.vbtmp.h.1.abc")); err != nil {
		t.Errorf("fresh temporary lease file removed: %v", err)
	}
	// The probe file is gone again.
	ents, _ := os.ReadDir(ldir)
	for _, e := range ents {
		if strings.Contains(e.Name(), "probe") {
			t.Errorf("probe left behind: %s", e.Name())
		}
	}
	if err := ls.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ls.Path()); !os.IsNotExist(err) {
		t.Fatal("lease file not removed on Release")
	}
	if _, err := HoldLease(t.Context(), LeaseOptions{Dir: dir, WorkerID: "../x", Generation: "g"}); err == nil {
		t.Fatal("bad worker id accepted")
	}
}

// TestLeaseRewrittenAfterRemoval: a lease removed by another worker (gc
// judged this one dead, say after a pause) comes back at the next refresh,
// with an error logged, since the generation may be gone.
func TestLeaseRewrittenAfterRemoval(t *testing.T) {
	dir := t.TempDir()
	core, logs := observer.New(zap.InfoLevel)
	ls, err := HoldLease(t.Context(), LeaseOptions{Dir: dir, WorkerID: "w", Generation: "g", Heartbeat: 10 * time.Millisecond, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Release()
	if err := os.Remove(ls.Path()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(logs.FilterMessageSnippet("use-lease file was removed").All()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("removal not reported")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for {
		if _, err := os.Stat(ls.Path()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("lease not rewritten")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
