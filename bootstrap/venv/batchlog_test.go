package venv

import "testing"

func TestParseBatchLog(t *testing.T) {
	ab := []*op{{dst: "a/b.py"}, {dst: "a/c.py"}}
	log := (&batchLog{}).line(ab, 1) + "x\t0\t0000000000000000\tc\n3\t4\t0000000000000000\td\n0\t0\t0000000000000000\te\n" +
		"1\t0\t0000000000000000\t\n5\t0\t0000000000000000\tf/g\x00\n2\t1\told/format\n1\t0\tnothex0000000000\tz\n7\t2\t0000000000000000\tlast/cut"
	got := parseBatchLog([]byte(log))
	if len(got) != 1 || got["a/b.py"] != (loggedBatch{files: 2, copied: 1, sum: batchSum(ab)}) {
		t.Fatalf("%+v", got)
	}
	if !got["a/b.py"].matches(ab) || got["a/b.py"].matches([]*op{{dst: "a/b.py"}, {dst: "a/d.py"}}) {
		t.Fatal("a batch matched by its name and size alone")
	}
}

func FuzzParseBatchLog(f *testing.F) {
	f.Add([]byte("2\t1\t00000000000000ff\ta/b.py\n3\t0\t0123456789abcdef\tc d\te\n2\t1\told/format\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for dst, b := range parseBatchLog(data) {
			if dst == "" || b.files < 1 || b.copied < 0 || b.copied > b.files {
				t.Fatalf("accepted %q: %+v", dst, b)
			}
		}
	})
}
