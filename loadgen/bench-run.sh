#!/usr/bin/env bash
# One ferrogram-loadgen benchmark run as docs/BENCHMARKS.md ("## loadgen") made them: a fresh
# `ferrogram serve` (one shard pinned to CPU 0, sync durability unless DURABILITY says
# otherwise, loadgen/bench-server.toml for the limits) and ferrogram-loadgen pinned to CPU 1,
# reporting the server's memory and CPU (--server-pid). Everything lands in
# target/bench-loadgen/NAME/: the loadgen report (text, JSON, SVG) and the server's log and
# Prometheus metrics (WAL fdatasync times, server-side send -> ack percentiles).
#
# Usage: loadgen/bench-run.sh NAME [ferrogram-loadgen options]
#   e.g. loadgen/bench-run.sh dm-4000 --scenario dm --users 1000 --rate 4000 --duration-s 10
# Build first: cargo build --release
# The machine should be otherwise idle: the script waits (up to QUIET_WAIT seconds, default
# 900; 0 skips) until all CPUs are under 10% busy over 3 s, and says so if they never are.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
shift
# Absolute: the server's media store cannot create segments under a relative --data-dir
# (glommio's Directory::open fails with EBADF on one), so every path handed to it is absolute.
dir=$PWD/target/bench-loadgen/$name
server=target/release/ferrogram
loadgen=target/release/ferrogram-loadgen
[[ -x $server && -x $loadgen ]] || { echo "missing $server or $loadgen: run cargo build --release" >&2; exit 1; }
rm -rf "$dir"
mkdir -p "$dir"

busy_and_total() { awk '/^cpu /{t=0; for(i=2;i<=9;i++) t+=$i; print t-$5-$6, t}' /proc/stat; }
waited=0
while (( waited < ${QUIET_WAIT:-900} )); do
  read -r b1 t1 < <(busy_and_total); sleep 3; read -r b2 t2 < <(busy_and_total)
  percent=$(( 100 * (b2 - b1) / (t2 - t1 + 1) ))
  (( percent < 10 )) && break
  waited=$((waited + 3))
done
echo "machine ${percent:-?}% busy before the run (waited ${waited} s)" | tee "$dir/quiet.txt"

"$server" serve --cores 1 --cpus 0 --config loadgen/bench-server.toml --durability "${DURABILITY:-sync}" \
  --metrics 127.0.0.1:9450 --data-dir "$dir/data" >"$dir/server.out" 2>"$dir/server.err" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do grep -q listening "$dir/server.out" 2>/dev/null && break; sleep 0.1; done
grep -q listening "$dir/server.out" || { echo "the server did not start:" >&2; cat "$dir/server.err" >&2; exit 1; }

"$loadgen" --cpus 1 --server-pid "$pid" --json "$dir/report.json" --svg "$dir/plot.svg" "$@" | tee "$dir/loadgen.out"
curl -s 127.0.0.1:9450/metrics >"$dir/metrics.txt" || echo "no metrics (is curl installed?)" >&2
kill -TERM "$pid"
wait "$pid" || true
