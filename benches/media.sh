#!/usr/bin/env bash
# Media throughput end to end through the gateway on loopback: `ferrogram serve --cores 1`
# pinned to one CPU, the command-line client pinned to another, release build, durability
# sync. Each run starts a fresh server on a fresh data directory and logs in two users (the
# `fixed:` code sender, one profile each); the sender sends each file to the receiver as a
# media message (`ferrogram upload +RECEIVER PATH`, which prints the message id), and the
# receiver reads it back through that message (`ferrogram download +SENDER ID -o /dev/null`).
# Two files of SIZE_MIB move:
#   random   - random bytes: every chunk is new (chunked, hashed, written, synced);
#   repeated - one random 1 MiB block over and over: after the first MiB every chunk is a
#              dedup hit (hashed, compared byte for byte with the stored chunk, not written).
# The figures are the client's own (its summary line: MB/s = 10^6 bytes per second; an upload
# is timed from UploadStart to UploadFinished, before the SendMedia that follows; a download from
# the transfer's GetFileInfo to the last byte), plus the server's CPU time over each client command
# (utime + stime from /proc), which says how busy its one core was.
#
# Usage: benches/media.sh [RUNS]
#   env: SIZE_MIB (1024), SERVER_CPU (0), CLIENT_CPU (1), DIR (a new temporary directory),
#        KEEP=1 keeps DIR.
set -euo pipefail

runs=${1:-2}
size_mib=${SIZE_MIB:-1024}
server_cpu=${SERVER_CPU:-0}
client_cpu=${CLIENT_CPU:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release/ferrogram
dir=${DIR:-$(mktemp -d /tmp/ferrogram-media-bench.XXXXXX)}
mkdir -p "$dir"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$dir"; fi
}
trap cleanup EXIT

if [ ! -x "$bin" ]; then (cd "$root" && cargo build --release --bin ferrogram); fi

echo "# $(date -u +%FT%TZ) $(uname -sr), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# commit $(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$root" && git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
echo "# server: serve --cores 1 --cpus $server_cpu under taskset -c $server_cpu; client: taskset -c $client_cpu; ${size_mib} MiB files"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "# making the files"
head -c $((size_mib << 20)) /dev/urandom > "$dir/random.bin"
head -c $((1 << 20)) /dev/urandom > "$dir/block.bin"
: > "$dir/repeated.bin"
for _ in $(seq "$size_mib"); do cat "$dir/block.bin"; done >> "$dir/repeated.bin"

sender_phone=+15550009001
receiver_phone=+15550009002
clock_ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start_server() {
  rm -rf "$dir/data" "$dir/home"
  taskset -c "$server_cpu" "$bin" serve --data-dir "$dir/data" --listen 127.0.0.1:0 --cores 1 --cpus "$server_cpu" \
    --durability sync --code-sender fixed:12345 > "$dir/serve.out" 2> "$dir/serve.err" &
  server=$!
  for _ in $(seq 600); do
    address=$(sed -n 's/^ferrogram listening on \([^ ]*\) .*/\1/p' "$dir/serve.out")
    [ -n "$address" ] && break
    sleep 0.1
  done
  [ -n "$address" ] || { cat "$dir/serve.err"; echo "the server did not start" >&2; exit 1; }
  export FERROGRAM_HOME=$dir/home FERROGRAM_SERVER=$address
  taskset -c "$client_cpu" "$bin" login --profile sender --phone "$sender_phone" --code 12345 \
    --name "Bench Sender" > /dev/null
  taskset -c "$client_cpu" "$bin" login --profile receiver --phone "$receiver_phone" --code 12345 \
    --name "Bench Receiver" > /dev/null
}

stop_server() {
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
}

# Runs one client command pinned to the client CPU; prints its summary with the server's CPU
# over the transfer and the client's over its whole run (connecting and logging in included).
measure() {
  local what=$1; shift
  local before after
  before=$(cpu_ticks "$server")
  local TIMEFORMAT='%U %S'
  { time taskset -c "$client_cpu" "$bin" "$@" > "$dir/client.out" 2> "$dir/client.err"; } 2> "$dir/client.time" \
    || { cat "$dir/client.err"; exit 1; }
  after=$(cpu_ticks "$server")
  local summary seconds
  summary=$(grep -E '^(uploaded|downloaded) ' "$dir/client.err" | tail -1)
  seconds=$(echo "$summary" | sed -n 's/.* in \([0-9.]*\) s:.*/\1/p')
  awk -v what="$what" -v summary="$summary" -v ticks=$((after - before)) -v hz="$clock_ticks" -v s="$seconds" \
    -v client="$(cat "$dir/client.time")" \
    'BEGIN { cpu = ticks / hz; split(client, c, " ");
             printf "%-18s %s (server CPU %.2f s = %.0f%% of its core; client CPU %.2f s)\n",
                    what, summary, cpu, 100 * cpu / s, c[1] + c[2] }'
}

for run in $(seq "$runs"); do
  echo "## run $run"
  start_server
  for file in random repeated; do
    measure "upload $file" upload --profile sender "$receiver_phone" "$dir/$file.bin"
    message=$(cat "$dir/client.out")
    [[ $message =~ ^[0-9]+$ ]] || { echo "upload printed no message id: $message" >&2; exit 1; }
    measure "download $file" download --profile receiver "$sender_phone" "$message" -o /dev/null
  done
  stop_server
done
