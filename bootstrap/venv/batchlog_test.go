package venv

import "testing"

func TestParseBatchLog(t *testing.T) {
	got := parseBatchLog([]byte("2\t1\ta/b.py\nx\t0\tc\n3\t4\td\n0\t0\te\n1\t0\t\n5\t0\tf/g\x00\n7\t2\tlast/cut"))
	if len(got) != 1 || got["a/b.py"] != (loggedBatch{files: 2, copied: 1}) {
		t.Fatalf("%+v", got)
	}
}

func FuzzParseBatchLog(f *testing.F) {
	f.Add([]byte("2\t1\ta/b.py\n3\t0\tc d\te\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for dst, b := range parseBatchLog(data) {
			if dst == "" || b.files < 1 || b.copied < 0 || b.copied > b.files {
				t.Fatalf("accepted %q: %+v", dst, b)
			}
		}
	})
}
