#!/usr/bin/env bash
# Every benchmark, each printing its figures and a ratio against a baseline
# run side by side (curl, pip, python -m venv, unzip). Run from the
# repository root after `make build` (make bench does both). The machines
# are shared and noisy: read medians, and run again before believing a miss.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_DIR:-$(mktemp -d /tmp/volboot-bench-XXXXXX)}
echo "== bench: work directory $out"

echo "== fetch (issue 4): one 2 GiB file and 200 small files vs curl"
go run ./bench/fetch -dir "$out/fetch"
echo "== fetch (issue 4): peak RSS while downloading 2 GiB"
VOLBOOT_FETCH_BIG=1 go test -count=1 -run TestPeakRSS -v ./bootstrap/fetch | grep -E 'RSS|ok|FAIL|---'

echo "== models (issue 8): one 2 GiB model file vs curl"
go run ./bench/models -dir "$out/models"

echo "== install (issue 5): venv vs python -m venv, synthetic stack vs pip and unzip, second generation"
# -keep, removed at the end: on ext4 without a journal, creates pay for a
# mass delete for about 5 minutes, which would slow the benchmarks after it.
go run ./bench/install -dir "$out/install" -keep

echo "== sync (issue 6): in-sync boot, large vs small stack, vs pip's no-op"
go run ./bench/sync -dir "$out/sync" -keep

echo "== first boot: an F5-shaped stack (half size) from an index capped at 40 MiB/s per download, vs its downloads alone (curl)"
go run ./bench/sync -dir "$out/sync" -keep -scale 0.5 -rate 40M -runs 3 -pipruns 1 | grep -E 'stack|first sync|downloads alone'

echo "== install on the MooseFS rig (issue 16): P11 first install vs uv and pip at 2 and 5 ms RTT, P5 second generation vs uv's warm cache, P12 in-sync boot (root and Debian's moosefs packages)"
# It says why and exits 1 where the rig cannot run (no root, no packages).
go run ./bench/moosefs -scale 0.25 -rtts 2ms,5ms || echo "bench/moosefs did not run to the end (above: why)"

echo "== kill loop (issue 23): first syncs killed every 25% and 50% of an undisturbed one, on the MooseFS rig (root and Debian's moosefs packages; else on local disk)"
go run ./bench/killloop -scale 0.02 -pcts 25,50 || go run ./bench/killloop -scale 0.02 -pcts 25,50 -local

echo "== supervise (issue 7): volboot run to the handler's first line vs the handler alone; RSS"
rm -rf "$out/demo"
go run ./integration/demo -volboot bin/volboot -dir "$out/demo" >/dev/null
go run ./bench/supervise -n 30 -supervisor bin/volboot \
  -supervisor-args "run --volume $out/demo/volume --manifest $out/demo/work/demo.toml" \
  -python "$out/demo/volume/venv/bin/python"

# Everything the benchmarks kept, once none is timing any more.
if [ -z "${BENCH_DIR:-}" ]; then
  rm -rf "$out"
fi
