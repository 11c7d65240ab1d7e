#!/usr/bin/env bash
# ferrogram and Redis side by side (issue 5, DESIGN §9): the same ferrogram-loadgen scenarios
# against `ferrogram serve` and against redis-server (streams + Pub/Sub, one FCALL per send,
# loadgen/src/target/redis/) at equal durability, on 127.0.0.1, the server pinned to CPU 0
# and loadgen to CPU 1. For each scenario and system it offers a few rates to find the peak
# (the highest rate sustained: achieved >= 95% of offered, no failed operation, no missing
# delivery, ack p99 under PEAK_ACK_P99_MS and, where there are deliveries, their p99 under
# PEAK_DELIVERY_P99_MS: a server that acknowledges at once but delivers seconds later does not
# sustain the rate), then runs at 50% of that peak and prints a
# markdown table of those runs with the command that reproduces it. A fresh server (and data
# directory) serves every run.
#
# Usage: benches/compare.sh [SCENARIO...]        (default: dm group channel history)
#        benches/compare.sh --list-runs DIR      (one line per run of an earlier OUT)
# Environment (defaults in brackets):
#   DURABILITY   durable [durable]: ferrogram --durability sync, Redis appendfsync always;
#                relaxed: ferrogram interval:1000, Redis appendfsync everysec
#   DURATION_S [3]  WARMUP_S [1]  DRAIN_S [3]   seconds of each run
#   USERS [1000]  SUBSCRIBERS [2000]  GROUP_SIZE [50]  PEAK_ACK_P99_MS [100]
#   PEAK_DELIVERY_P99_MS [1000]
#   DM_RATES ["2000 5000 10000 20000"]  GROUP_RATES ["100 200 400 800"]
#   CHANNEL_RATES ["5 20 80"]  HISTORY_RATES ["2000 5000 10000 20000"]
#   OUT [target/bench-compare]  where reports, logs and the table (table.md) go
#   BUILD [1]   0: use the binaries already built in target/release
# Needs: cargo, python3, apt-get (only when redis-server is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

# Every run of a directory, one line each: what the peak search saw.
list_runs() { # dir
  python3 - "$1" <<'PY'
import json, os, sys
root = sys.argv[1]
print("| run | offered / achieved /s | answer p50 / p99 ms | delivery p99 ms | failed | missing | server CPU | loadgen CPU (its core busy) | flagged |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for name in sorted(os.listdir(root), key=lambda n: (os.path.getmtime(os.path.join(root, n)))):
    path = os.path.join(root, name, "report.json")
    if not os.path.exists(path):
        continue
    r = json.load(open(path))
    m = r["measures"]
    answer = m["history_page"] if name.startswith("history") else m["send_ack"]
    delivery = m["delivery"]["p99_ms"] if m["delivery"]["count"] else None
    load, cpu, server = r["load"], r["loadgen_cpu"], r.get("server_cpu") or {}
    busy = cpu.get("cores_busy")
    print(f'| {name} | {load["offered_rate_per_s"]:.0f} / {load["achieved_rate_per_s"]:.0f} | '
          f'{answer["p50_ms"]:.3g} / {answer["p99_ms"]:.3g} | {"—" if delivery is None else f"{delivery:.3g}"} | '
          f'{load["failed"]} | {r["deliveries"]["missing"]} | {100 * server.get("utilization", 0):.0f}% | '
          f'{100 * cpu["utilization"]:.0f}% ({"?" if busy is None else f"{100 * busy:.0f}%"}) | '
          f'{"yes" if r["loadgen_bottleneck"] else "no"} |')
PY
}
if [[ ${1:-} == --list-runs ]]; then list_runs "$2"; exit 0; fi

scenarios=("$@")
(( ${#scenarios[@]} )) || scenarios=(dm group channel history)
durability=${DURABILITY:-durable}
case $durability in
  durable) ferrogram_durability=sync; redis_fsync=always ;;
  relaxed) ferrogram_durability=interval:1000; redis_fsync=everysec ;;
  *) echo "DURABILITY must be durable or relaxed" >&2; exit 2 ;;
esac
duration=${DURATION_S:-3}; warmup=${WARMUP_S:-1}; drain=${DRAIN_S:-3}
users=${USERS:-1000}; subscribers=${SUBSCRIBERS:-2000}; group_size=${GROUP_SIZE:-50}
peak_ack_p99_ms=${PEAK_ACK_P99_MS:-100}
peak_delivery_p99_ms=${PEAK_DELIVERY_P99_MS:-1000}
out=${OUT:-target/bench-compare}
ferrogram_port=7450 redis_port=6390

if ! command -v redis-server >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
redis_version=$(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p')
(( ${redis_version%%.*} >= 7 )) || { echo "redis-server $redis_version: 7 or later is needed (functions)" >&2; exit 1; }
# BUILD=0 uses the binaries already in target/release.
[[ ${BUILD:-1} == 0 ]] || cargo build --release -q -p ferrogram -p ferrogram-loadgen
ulimit -n "$(ulimit -Hn)"
rm -rf "$out"; mkdir -p "$out"

server_pid=
stop_server() {
  if [[ -n $server_pid ]]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  server_pid=
}
trap stop_server EXIT

wait_port() {
  for _ in $(seq 1 300); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2; return 1
}

start_server() { # system dir
  mkdir -p "$2/data"
  if [[ $1 == ferrogram ]]; then
    target/release/ferrogram serve --cores 1 --cpus 0 --config loadgen/bench-server.toml \
      --listen "127.0.0.1:$ferrogram_port" --durability "$ferrogram_durability" --data-dir "$2/data" \
      >"$2/server.out" 2>"$2/server.err" &
    server_pid=$!
    wait_port "$ferrogram_port"
  else
    taskset -c 0 redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$2/data" --save '' \
      --appendonly yes --appendfsync "$redis_fsync" --maxclients 40000 --daemonize no \
      >"$2/server.out" 2>"$2/server.err" &
    server_pid=$!
    wait_port "$redis_port"
  fi
}

scenario_options() { # scenario
  case $1 in
    dm) echo "--scenario dm --users $users" ;;
    group) echo "--scenario group --users $users --group-size $group_size --chats 20" ;;
    channel) echo "--scenario channel --subscribers $subscribers --posters 1" ;;
    history) echo "--scenario history --users 100 --chats 10 --prefill 1000 --page 50" ;;
  esac
}

rates() {
  case $1 in
    dm) echo "${DM_RATES:-2000 5000 10000 20000}" ;;
    group) echo "${GROUP_RATES:-100 200 400 800}" ;;
    channel) echo "${CHANNEL_RATES:-5 20 80}" ;;
    history) echo "${HISTORY_RATES:-2000 5000 10000 20000}" ;;
  esac
}

run_one() { # system scenario rate name -> prints the report's JSON path
  local dir="$out/$4" address
  mkdir -p "$dir"
  start_server "$1" "$dir"
  if [[ $1 == ferrogram ]]; then address=127.0.0.1:$ferrogram_port; else address=127.0.0.1:$redis_port; fi
  # Channel followers never send: Redis needs command connections only for the posters (one
  # per online user would double the descriptors loadgen asks for with 10,000 followers).
  local extra=()
  if [[ $1 == redis && $2 == channel ]]; then extra=(--redis-command-connections 16); fi
  # shellcheck disable=SC2046
  target/release/ferrogram-loadgen --target "$1" --server "$address" --cpus 1 --server-pid "$server_pid" \
    "${extra[@]}" $(scenario_options "$2") --rate "$3" --duration-s "$duration" --warmup-s "$warmup" --drain-s "$drain" \
    --json "$dir/report.json" >"$dir/loadgen.out" 2>"$dir/loadgen.err" || echo "run $4 failed: see $dir" >&2
  grep VmRSS "/proc/$server_pid/status" | awk '{print $2}' >"$dir/rss_kib" || true
  stop_server
  echo "$dir/report.json"
}

sustained() { # report.json scenario -> exit 0 when the rate was sustained
  python3 - "$1" "$2" "$peak_ack_p99_ms" "$peak_delivery_p99_ms" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(1)
load, d = r["load"], r["deliveries"]
# The answer that matters: the page for history runs, the send's ack otherwise.
answer = r["measures"].get("history_page" if sys.argv[2] == "history" else "send_ack")
delivery = r["measures"].get("delivery")
delivered_in_time = delivery is None or delivery["count"] == 0 or delivery["p99_ms"] <= float(sys.argv[4])
ok = answer is not None and answer["count"] > 0 \
    and load["achieved_rate_per_s"] >= 0.95 * load["offered_rate_per_s"] and load["failed"] == 0 \
    and d["missing"] == 0 and answer["p99_ms"] <= float(sys.argv[3]) and delivered_in_time
sys.exit(0 if ok else 1)
PY
}

rows=()
for scenario in "${scenarios[@]}"; do
  for system in ferrogram redis; do
    # One stall on a shared machine can fail a single rate, so the ladder goes on past one
    # failure and stops after two in a row; the peak is the highest rate sustained.
    peak=0; peak_flagged=no; failures=0
    for rate in $(rates "$scenario"); do
      report=$(run_one "$system" "$scenario" "$rate" "$scenario-$system-$rate")
      echo "$scenario $system $rate/s: $(grep -m1 -E 'achieved' "$(dirname "$report")/loadgen.out" || echo 'no report')" >&2
      if sustained "$report" "$scenario"; then
        peak=$rate; failures=0
        peak_flagged=$(python3 -c 'import json,sys;print("yes" if json.load(open(sys.argv[1]))["loadgen_bottleneck"] else "no")' "$report")
      else
        failures=$((failures + 1))
        (( failures < 2 )) || break
      fi
    done
    if (( peak == 0 )); then
      rows+=("| $scenario | $system | none of $(rates "$scenario") sustained | | | | | | |")
      continue
    fi
    half=$(( peak / 2 ))
    report=$(run_one "$system" "$scenario" "$half" "$scenario-$system-half-$half")
    rss=$(cat "$(dirname "$report")/rss_kib" 2>/dev/null || echo '?')
    rows+=("$(python3 - "$report" "$scenario" "$system" "$peak" "$peak_flagged" "$rss" <<'PY'
import json, sys
path, scenario, system, peak, peak_flagged, rss = sys.argv[1:]
try:
    r = json.load(open(path))
except Exception:
    print(f"| {scenario} | {system} | {peak} | run at half failed | | | | | |"); sys.exit()
m = r["measures"]
def triple(name):
    s = m.get(name)
    return "—" if not s or not s["count"] else f'{s["p50_ms"]:.3g} / {s["p99_ms"]:.3g} / {s["p999_ms"]:.3g}'
first = "history_page" if scenario == "history" else "send_ack"
load, d = r["load"], r["deliveries"]
flag = "yes" if r["loadgen_bottleneck"] else "no"
rss_mib = f"{int(rss) / 1024:.1f}" if rss.isdigit() else "?"
print(f'| {scenario} | {system} | {peak}{" (flagged)" if peak_flagged == "yes" else ""} | '
      f'{load["offered_rate_per_s"]:.0f} / {load["achieved_rate_per_s"]:.0f} | {triple(first)} | '
      f'{triple("delivery")} | {d["missing"]} of {d["expected"]} | {rss_mib} | {flag} |')
PY
)")
  done
done

{
  echo "Durability: $durability (ferrogram --durability $ferrogram_durability, Redis appendonly yes +" \
    "appendfsync $redis_fsync); $duration s measured after $warmup s warm-up per run; server on CPU 0," \
    "loadgen on CPU 1; redis-server $redis_version."
  echo
  echo "| scenario | system | peak sustained/s (of the rates tried) | at 50%: offered / achieved /s | ack (history: page) p50 / p99 / p99.9 ms | delivery p50 / p99 / p99.9 ms | missing deliveries | server RSS after run, MiB | loadgen flagged |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Every run (the peak search, then the run at 50%):"
  echo
  list_runs "$out"
  echo
  echo "Reproduce: \`DURABILITY=$durability DURATION_S=$duration WARMUP_S=$warmup DRAIN_S=$drain USERS=$users" \
    "SUBSCRIBERS=$subscribers benches/compare.sh ${scenarios[*]}\`"
} | tee "$out/table.md"
