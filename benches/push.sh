#!/usr/bin/env bash
# Push notifications (issue 7): what push costs the send path, and how many pushes/s the
# server's dispatcher delivers to a local relay. `ferrogram serve` runs with all its threads on
# CPU 0 (taskset; shard pinned with --cpus 0), ferrogram-loadgen and the push sink
# (`ferrogram-loadgen push-sink`, the relay stand-in that answers 200 {} to every POST) on
# CPU 1. A fresh server and data directory serve every run.
#
# latency:    the dm scenario at each of RATES sends/s, USERS users of which the ONLINE share
#             is online, every user with a webhook device (--push-devices): messages to the
#             offline members cause push jobs. Push on (--push-webhook to the sink) and push off
#             (the same flags without --push-webhook: the same devices, no jobs) alternate,
#             REPEATS times each; send -> ack p50/p99/p99.9 for both, and the pushes delivered.
# throughput: every message goes to an offline member with a device (THROUGHPUT_USERS users,
#             THROUGHPUT_CONNECTIONS online, THROUGHPUT_CHATS private chats, so nearly every
#             chat's peer is offline), coalescing window THROUGHPUT_WINDOW_MS (0: a message is
#             folded into another only while that (user, chat)'s previous push is in flight),
#             at each of THROUGHPUT_RATES; pushes/s from the sink (per second) and from
#             ferrogram_push_sent_total sampled once a second.
# backlog:    the dispatcher's pace with nothing else to do: BACKLOG_RATES sends/s for
#             BACKLOG_DURATION_S (+ warm-up) into BACKLOG_CHATS private chats (about one job per
#             (user, chat), so few fold together) queue jobs under a 60 s window, none pushed;
#             the server stops and starts again with THROUGHPUT_WINDOW_MS, its start-up sweep
#             feeds the whole outbox, and the sink counts the drain second by second.
#
# Usage: benches/push.sh [latency] [throughput] [backlog]     (default: all three)
# Environment (defaults in brackets):
#   RATES ["2000 4000"]  USERS [1000]  ONLINE [0.5]  COALESCING_WINDOW_MS [2000]  REPEATS [2]
#   DURATION_S [10]  WARMUP_S [2]  DRAIN_S [5]   seconds of each loadgen run (bounded at 60 s)
#   THROUGHPUT_RATES ["2000 4000 8000 12000"]  THROUGHPUT_USERS [10000]
#   THROUGHPUT_CONNECTIONS [100]  THROUGHPUT_CHATS [20000]  THROUGHPUT_WINDOW_MS [0]
#   BACKLOG_RATES [8000]  BACKLOG_DURATION_S [20]  BACKLOG_CHATS [100000] (of THROUGHPUT_USERS)
#   PUSH_DRAIN_S [20]  after the load, how long to wait for the last pushes
#   DURABILITY [sync]  OUT [target/bench-push]  BUILD [1] (0: use the binaries as built)
#   SERVER_BIN [target/release/ferrogram]  LOADGEN_BIN [target/release/ferrogram-loadgen]
#   QUIET_WAIT [120]  seconds to wait for an idle machine before each run (0: do not wait)
#   MACHINE_LIMITS [1]  0: skip ../shared/tools/machine-limits.sh
# Needs: cargo, curl, python3, taskset.
set -euo pipefail
cd "$(dirname "$0")/.."

phases=("$@")
(( ${#phases[@]} )) || phases=(latency throughput backlog)
rates=${RATES:-2000 4000}; users=${USERS:-1000}; online=${ONLINE:-0.5}; window=${COALESCING_WINDOW_MS:-2000}
repeats=${REPEATS:-2}; duration=${DURATION_S:-10}; warmup=${WARMUP_S:-2}; drain=${DRAIN_S:-5}
throughput_rates=${THROUGHPUT_RATES:-2000 4000 8000 12000}
throughput_users=${THROUGHPUT_USERS:-10000}; throughput_connections=${THROUGHPUT_CONNECTIONS:-100}
throughput_chats=${THROUGHPUT_CHATS:-20000}; throughput_window=${THROUGHPUT_WINDOW_MS:-0}
backlog_rates=${BACKLOG_RATES:-8000}; backlog_duration=${BACKLOG_DURATION_S:-20}
backlog_chats=${BACKLOG_CHATS:-100000}
push_drain=${PUSH_DRAIN_S:-20}; durability=${DURABILITY:-sync}; out=${OUT:-target/bench-push}
server_port=7471 metrics_port=9471 sink_port=7472
server=${SERVER_BIN:-target/release/ferrogram} loadgen=${LOADGEN_BIN:-target/release/ferrogram-loadgen}
machine_limits=../shared/tools/machine-limits.sh

[[ ${BUILD:-1} == 0 ]] || cargo build --release -q -p ferrogram -p ferrogram-loadgen
[[ -x $server && -x $loadgen ]] || { echo "missing $server or $loadgen: cargo build --release" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
rm -rf "$out"; mkdir -p "$out"
tmp=$(mktemp -d -t ferrogram-push-bench.XXXXXX)

server_pid= sink_pid= sampler_pid=
stop() { # pid... : TERM, then wait for each
  local pid
  for pid in "$@"; do [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do [[ -n $pid ]] && wait "$pid" 2>/dev/null || true; done
}
cleanup() {
  stop "$sampler_pid" "$server_pid" "$sink_pid"
  server_pid= sink_pid= sampler_pid=
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The relay's secret, and the benchmark limits with the coalescing window of the phase.
printf 'bench-secret-%s\n' "$RANDOM$RANDOM" >"$tmp/secret"
config_with_window() { # window_ms file
  { cat loadgen/bench-server.toml; printf '\n[push]\ncoalescing_window_ms = %s\n' "$1"; } >"$2"
}

busy_and_total() { awk '/^cpu /{t=0; for(i=2;i<=9;i++) t+=$i; print t-$5-$6, t}' /proc/stat; }
# Process time only (user, nice, system: no interrupts, softirqs or steal) and the total.
process_and_total() { awk '/^cpu /{t=0; for(i=2;i<=9;i++) t+=$i; print $2+$3+$4, t}' /proc/stat; }
wait_quiet() { # prints the busy percentage it settled for and the seconds waited
  local waited=0 percent=100 b1 t1 b2 t2
  while :; do
    read -r b1 t1 < <(busy_and_total); sleep 3; read -r b2 t2 < <(busy_and_total)
    percent=$(( 100 * (b2 - b1) / (t2 - t1 + 1) ))
    (( percent < 10 || waited >= ${QUIET_WAIT:-120} )) && break
    waited=$((waited + 3))
  done
  echo "$percent $waited"
}

metric() { # file name -> the value of an unlabelled metric, or 0
  awk -v name="$2" '$1 == name {print $2; found=1} END {if (!found) print 0}' "$1"
}

wait_for() { # pattern file seconds
  for _ in $(seq 1 $(( $3 * 10 ))); do grep -q "$1" "$2" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

start_sink() { # dir
  # Runs in every mode, so push on and off share CPU 1 with the same processes.
  taskset -c 1 "$loadgen" push-sink --listen "127.0.0.1:$sink_port" --threads 1 --json "$1/sink.json" \
    >"$1/sink.out" 2>"$1/sink.err" &
  sink_pid=$!
  wait_for "listening" "$1/sink.out" 10 || { echo "the sink did not start" >&2; cat "$1/sink.err" >&2; exit 1; }
}

start_server() { # dir data push(on|off) window_ms log-suffix
  local push_flags=()
  [[ $3 == on ]] && push_flags=(--push-webhook "http://127.0.0.1:$sink_port/push" --push-webhook-secret-file "$tmp/secret")
  config_with_window "$4" "$2/server$5.toml"
  taskset -c 0 "$server" serve --cores 1 --cpus 0 --config "$2/server$5.toml" --listen "127.0.0.1:$server_port" \
    --metrics "127.0.0.1:$metrics_port" --durability "$durability" --data-dir "$2/data" "${push_flags[@]}" \
    >"$1/server$5.out" 2>"$1/server$5.err" &
  server_pid=$!
  wait_for "listening" "$1/server$5.out" 60 || { echo "the server did not start" >&2; cat "$1/server$5.err" >&2; exit 1; }
}

# Once a second: the time, ferrogram_push_sent_total, _jobs_accepted_total, _jobs_live; the CPU
# time so far (user + system, clock ticks) of the server, the sink and loadgen; and the
# machine's process ticks (user, nice, system) and total ticks over all CPUs, so other
# processes' share shows.
start_sampler() { # dir data
  local pid=$server_pid sink=$sink_pid
  ( ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
    while :; do
      if curl -s --noproxy '*' "127.0.0.1:$metrics_port/metrics" >"$2/sample.txt" 2>/dev/null; then
        echo "$(date +%s.%N) $(metric "$2/sample.txt" ferrogram_push_sent_total)" \
          "$(metric "$2/sample.txt" ferrogram_push_jobs_accepted_total)" \
          "$(metric "$2/sample.txt" ferrogram_push_jobs_live)" "$(ticks "$pid")" "$(ticks "$sink")" \
          "$(ticks "$(cat "$2/loadgen.pid" 2>/dev/null || echo none)")" "$(process_and_total)"
      fi
      sleep 1
    done ) >>"$1/push-samples.txt" 2>/dev/null &
  sampler_pid=$!
}

# Waits (at most PUSH_DRAIN_S) until `due` jobs are finished and removed from the outbox (the
# feeder removes finished jobs every 100 ms) and none is live.
wait_pushes_done() { # data due
  local deadline=$(( SECONDS + push_drain ))
  while (( SECONDS < deadline )); do
    curl -s --noproxy '*' "127.0.0.1:$metrics_port/metrics" >"$1/drain.txt" 2>/dev/null || true
    (( $(metric "$1/drain.txt" ferrogram_push_jobs_completed_total) >= $2 )) \
      && (( $(metric "$1/drain.txt" ferrogram_push_host_jobs_removed_total) >= $2 )) \
      && (( $(metric "$1/drain.txt" ferrogram_push_jobs_live) == 0 )) && return 0
    sleep 0.5
  done
  echo "pushes not finished after $push_drain s" >&2
}

loadgen_run() { # dir data name: loadgen's options follow
  local dir=$1 data=$2 name=$3; shift 3
  timeout 60 "$loadgen" --server "127.0.0.1:$server_port" --cpus 1 --server-pid "$server_pid" --push-devices \
    --warmup-s "$warmup" --drain-s "$drain" --json "$dir/report.json" "$@" \
    >"$dir/loadgen.out" 2>"$dir/loadgen.err" &
  local bounded=$!
  # loadgen itself is timeout's child: the sampler reads its CPU time.
  for _ in $(seq 1 20); do pgrep -P "$bounded" >"$data/loadgen.pid" && break; sleep 0.05; done
  wait "$bounded" || echo "run $name: loadgen failed or timed out (see $dir)" >&2
}

due_of() { # report.json -> the push jobs its sends should have queued
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["offline_recipient_messages"])' "$1" 2>/dev/null || echo 0
}

finish_run() { # dir data name
  curl -s --noproxy '*' "127.0.0.1:$metrics_port/metrics" >"$1/metrics.txt" || true
  stop "$sampler_pid"; sampler_pid=
  stop "$server_pid"; server_pid=
  stop "$sink_pid"; sink_pid=
  rm -rf "$2"
  echo "$3: $(grep -m1 -E '^send_ack' "$1/loadgen.out" || echo 'no report'); $(tail -3 "$1/sink.out" | head -1)" >&2
}

# One run under load: name, push (on|off), window_ms, then loadgen's scenario options.
run_one() {
  local name=$1 push=$2 run_window=$3; shift 3
  local dir=$out/$name data=$tmp/$name
  mkdir -p "$dir" "$data"
  read -r quiet waited < <(wait_quiet)
  echo "$quiet $waited" >"$dir/quiet"
  start_sink "$dir"
  start_server "$dir" "$data" "$push" "$run_window" ""
  start_sampler "$dir" "$data"
  loadgen_run "$dir" "$data" "$name" --duration-s "$duration" "$@"
  [[ $push == on ]] && wait_pushes_done "$data" "$(due_of "$dir/report.json")"
  finish_run "$dir" "$data" "$name"
}

# A backlog drained with the shard otherwise idle: the load queues its jobs under a 60 s
# window (nothing is pushed yet), the server stops (unfinished jobs stay in the outbox), and
# starts again with a window of THROUGHPUT_WINDOW_MS: its first sweep feeds every job at once,
# and the sink's per-second count is the dispatcher's pace with no load beside it.
run_backlog() { # name rate
  local name=$1 backlog_rate=$2
  local dir=$out/$name data=$tmp/$name
  mkdir -p "$dir" "$data"
  read -r quiet waited < <(wait_quiet)
  echo "$quiet $waited" >"$dir/quiet"
  start_sink "$dir"
  start_server "$dir" "$data" on 60000 "-load"
  loadgen_run "$dir" "$data" "$name" --duration-s "$backlog_duration" --scenario dm --users "$throughput_users" \
    --connections "$throughput_connections" --chats "$backlog_chats" --rate "$backlog_rate"
  curl -s --noproxy '*' "127.0.0.1:$metrics_port/metrics" >"$dir/metrics-load.txt" || true
  stop "$server_pid"; server_pid=
  local started_ns=$(date +%s%N)
  start_server "$dir" "$data" on "$throughput_window" ""
  start_sampler "$dir" "$data"
  wait_pushes_done "$data" "$(due_of "$dir/report.json")"
  # The second server's CPU over its life (start-up, the sweep, the drain): ticks and seconds.
  echo "$(awk '{print $14 + $15}' "/proc/$server_pid/stat") $(getconf CLK_TCK)" \
    "$(( ($(date +%s%N) - started_ns) / 1000000 ))" >"$dir/server-cpu"
  finish_run "$dir" "$data" "$name"
}

summary() { # phase -> markdown table of that phase's runs
  python3 - "$out" "$1" <<'PY'
import json, os, re, sys
root, phase = sys.argv[1], sys.argv[2]

def metrics(path):
    values = {}
    try:
        for line in open(path):
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    except OSError:
        pass
    return values

HZ = os.sysconf("SC_CLK_TCK")

def others_cpu(path, while_pushing=False):
    """Cores used by processes other than the server, the sink and loadgen (the sampler's own
    curl and awk included; interrupts and softirqs not) while loadgen ran (or while pushes
    went out): the mean and the busiest second."""
    try:
        rows = [tuple(map(float, line.split()[:9])) for line in open(path) if len(line.split()) >= 9]
    except (OSError, ValueError):
        return None
    cores = os.cpu_count() or 1
    shares = []
    for a, b in zip(rows, rows[1:]):
        running = b[1] > a[1] if while_pushing else a[6] > 0 and b[6] > a[6]
        if not running or b[8] <= a[8]:
            continue
        machine = (b[7] - a[7]) / (b[8] - a[8]) * cores
        ours = ((b[4] - a[4]) + (b[5] - a[5]) + (b[6] - a[6])) / HZ / (b[0] - a[0])
        shares.append(max(0.0, machine - ours))
    if not shares:
        return None
    return sum(shares) / len(shares), max(shares)

def fsync_text(m):
    """The WAL's fdatasync mean and max over the server's life (disk stalls show here)."""
    shard = '{shard="0"}'
    syncs = m.get("ferrogram_wal_fsyncs_total" + shard, 0)
    if not syncs:
        return "?"
    mean_us = m.get("ferrogram_wal_fsync_microseconds_total" + shard, 0) / syncs
    return f'{mean_us:.0f} us / {m.get("ferrogram_wal_fsync_microseconds_max" + shard, 0) / 1000:.1f} ms'

def others_text(path, while_pushing=False):
    found = others_cpu(path, while_pushing)
    return "?" if found is None else f"{found[0]:.2f} / {found[1]:.2f}"

def sampled_rate(path):
    """Peak and mean pushes/s of ferrogram_push_sent_total between samples, and the server's
    and the sink's CPU shares over the intervals from the first with a push to the last."""
    rows = []
    try:
        rows = [tuple(map(float, line.split()[:9])) for line in open(path) if len(line.split()) >= 9]
    except (OSError, ValueError):
        pass
    pairs = [(a, b) for a, b in zip(rows, rows[1:]) if b[0] > a[0]]
    rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in pairs]
    busy = [r for r in rates if r > 0]
    first = next((i for i, r in enumerate(rates) if r > 0), None)
    last = max((i for i, r in enumerate(rates) if r > 0), default=None)
    if first is None:
        return 0, 0, None, None
    span = pairs[first:last + 1]
    seconds = span[-1][1][0] - span[0][0][0]
    mean = (span[-1][1][1] - span[0][0][1]) / seconds
    cpu = (span[-1][1][4] - span[0][0][4]) / HZ / seconds
    sink_cpu = (span[-1][1][5] - span[0][0][5]) / HZ / seconds
    return max(busy), mean, cpu, sink_cpu

runs = sorted((n for n in os.listdir(root) if n.startswith(phase + "-")), key=lambda n: os.path.getmtime(os.path.join(root, n)))
if phase == "backlog":
    print("| run | machine busy before | load: offered / achieved sends/s | jobs queued (due / accepted) | pushes sent (metric) / at sink | messages in pushes (sink) | drain: seconds from first to last push | pushes/s at sink: mean / peak s | pushes/s from ferrogram_push_sent_total: mean / peak | server CPU: its second life; while pushing | other processes while pushing, cores: mean / peak s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in runs:
        d = os.path.join(root, name)
        try:
            r = json.load(open(os.path.join(d, "report.json")))
            s = json.load(open(os.path.join(d, "sink.json")))
        except (OSError, ValueError):
            print(f"| {name} | run failed | | | | | | | | |")
            continue
        loaded, m = metrics(os.path.join(d, "metrics-load.txt")), metrics(os.path.join(d, "metrics.txt"))
        quiet = open(os.path.join(d, "quiet")).read().split()
        peak, mean, drain_cpu, sink_cpu = sampled_rate(os.path.join(d, "push-samples.txt"))
        try:
            ticks, hz, wall_ms = map(float, open(os.path.join(d, "server-cpu")).read().split())
            server_cpu = f"{100 * ticks / hz / (wall_ms / 1000):.0f}% of {wall_ms / 1000:.1f} s"
        except (OSError, ValueError, ZeroDivisionError):
            server_cpu = "?"
        if drain_cpu is not None:
            server_cpu += f"; {100 * drain_cpu:.0f}% while pushing (the sink {100 * sink_cpu:.0f}% of CPU 1)"
        load, t = r["load"], s["totals"]
        print(f'| {name} | {quiet[0]}% (waited {quiet[1]} s) | {load["offered_rate_per_s"]:.0f} / {load["achieved_rate_per_s"]:.0f} | '
              f'{r.get("offline_recipient_messages", 0)} / {int(loaded.get("ferrogram_push_jobs_accepted_total", 0))} | '
              f'{int(m.get("ferrogram_push_sent_total", 0))} / {t["requests"]} | {t["messages"]} | {s["active_seconds"]} | '
              f'{s["requests_per_s_mean_active"]:.0f} / {s["requests_per_s_peak"]} | {mean:.0f} / {peak:.0f} | {server_cpu} | '
              f'{others_text(os.path.join(d, "push-samples.txt"), True)} |')
    sys.exit()
if phase == "latency":
    print("| run | push | machine busy before | offered / achieved /s | send→ack p50 / p99 / p99.9 / max ms | delivery p99 ms | server-side ack p99 ms | server CPU | loadgen CPU (core busy) | flagged | push jobs due / accepted | pushes sent (metric) / at sink | messages in pushes (sink) | pushes/s at sink: mean / peak | other processes while loading, cores: mean / peak s | fdatasync mean / max |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
else:
    print("| run | machine busy before | offered / achieved sends/s | send→ack p50 / p99 ms | server CPU | loadgen CPU (core busy) | flagged | push jobs due / accepted | pushes sent (metric) / at sink | coalesced | pushes/s at sink: mean over active s / peak s | pushes/s from ferrogram_push_sent_total: mean / peak | sink CPU while pushing | other processes while loading, cores: mean / peak s | fdatasync mean / max |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for name in runs:
    d = os.path.join(root, name)
    try:
        r = json.load(open(os.path.join(d, "report.json")))
    except (OSError, ValueError):
        print(f"| {name} | run failed | | | | | | | | | | |")
        continue
    try:
        s = json.load(open(os.path.join(d, "sink.json")))
    except (OSError, ValueError):
        s = {"totals": {"requests": 0, "messages": 0}, "requests_per_s_mean_active": 0, "requests_per_s_peak": 0}
    m = metrics(os.path.join(d, "metrics.txt"))
    quiet = open(os.path.join(d, "quiet")).read().split()
    a, load, cpu = r["measures"]["send_ack"], r["load"], r["loadgen_cpu"]
    server_cpu = (r.get("server_cpu") or {}).get("utilization", 0)
    busy = cpu.get("cores_busy")
    flagged = "yes" if r["loadgen_bottleneck"] else "no"
    server_ack = m.get('ferrogram_send_ack_seconds{shard="0",quantile="0.99"}')
    push = "on" if "-on-" in name else "off"
    sent = int(m.get("ferrogram_push_sent_total", 0))
    accepted = int(m.get("ferrogram_push_jobs_accepted_total", 0))
    coalesced = int(m.get("ferrogram_push_coalesced_total", 0))
    t = s["totals"]
    common = (f'{quiet[0]}% (waited {quiet[1]} s)', f'{load["offered_rate_per_s"]:.0f} / {load["achieved_rate_per_s"]:.0f}')
    cpus = (f'{100 * server_cpu:.0f}%', f'{100 * cpu["utilization"]:.0f}% ({"?" if busy is None else f"{100 * busy:.0f}%"})')
    due = r.get("offline_recipient_messages", 0)
    if phase == "latency":
        delivery = r["measures"]["delivery"]
        print(f'| {name} | {push} | {common[0]} | {common[1]} | '
              f'{a["p50_ms"]:.3g} / {a["p99_ms"]:.3g} / {a["p999_ms"]:.3g} / {a["max_ms"]:.3g} | {delivery["p99_ms"]:.3g} | '
              f'{"?" if server_ack is None else f"{1000 * server_ack:.3g}"} | {cpus[0]} | {cpus[1]} | {flagged} | '
              f'{due if push == "on" else "—"} / {accepted} | {sent} / {t["requests"]} | {t["messages"]} | '
              f'{s["requests_per_s_mean_active"]:.0f} / {s["requests_per_s_peak"]} | {others_text(os.path.join(d, "push-samples.txt"))} | '
              f'{fsync_text(m)} |')
    else:
        peak, mean, _, sink_cpu = sampled_rate(os.path.join(d, "push-samples.txt"))
        print(f'| {name} | {common[0]} | {common[1]} | {a["p50_ms"]:.3g} / {a["p99_ms"]:.3g} | {cpus[0]} | {cpus[1]} | '
              f'{flagged} | {due} / {accepted} | {sent} / {t["requests"]} | {coalesced} | '
              f'{s["requests_per_s_mean_active"]:.0f} / {s["requests_per_s_peak"]} | {mean:.0f} / {peak:.0f} | '
              f'{"?" if sink_cpu is None else f"{100 * sink_cpu:.0f}%"} | {others_text(os.path.join(d, "push-samples.txt"))} | {fsync_text(m)} |')
PY
}

{
  echo "## Machine ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r))"
  echo
  if [[ ${MACHINE_LIMITS:-1} != 0 && -x $machine_limits ]]; then
    "$machine_limits" "$tmp/limits" || echo "(machine-limits.sh failed)"
  else
    echo "(machine-limits.sh skipped)"
  fi
  echo
} | tee "$out/machine.md"

for phase in "${phases[@]}"; do
  case $phase in
    latency)
      for repeat in $(seq 1 "$repeats"); do
        for rate in $rates; do
          for push in on off; do
            run_one "latency-$rate-$push-$repeat" "$push" "$window" --scenario dm --users "$users" \
              --online "$online" --rate "$rate"
          done
        done
      done
      ;;
    backlog)
      for repeat in $(seq 1 "$repeats"); do
        for backlog_rate in $backlog_rates; do
          run_backlog "backlog-$backlog_rate-$repeat" "$backlog_rate"
        done
      done
      ;;
    throughput)
      for repeat in $(seq 1 "$repeats"); do
        for throughput_rate in $throughput_rates; do
          run_one "throughput-on-$throughput_rate-$repeat" on "$throughput_window" --scenario dm \
            --users "$throughput_users" --connections "$throughput_connections" --chats "$throughput_chats" \
            --rate "$throughput_rate"
        done
      done
      ;;
    *) echo "unknown phase $phase: latency, throughput or backlog" >&2; exit 2 ;;
  esac
done

{
  for phase in "${phases[@]}"; do
    case $phase in
      latency) echo "### Push on vs off: dm at $rates sends/s, $users users, online share $online, every user with a webhook device, coalescing window $window ms" ;;
      throughput) echo "### Pushes/s under load: every message to an offline member with a device ($throughput_users users, $throughput_connections online, $throughput_chats private chats), coalescing window $throughput_window ms" ;;
      backlog) echo "### Pushes/s draining a backlog: $backlog_rates sends/s for $warmup + $backlog_duration s into $backlog_chats private chats ($throughput_users users, $throughput_connections online) queued under a 60 s window, then a restart with window $throughput_window ms" ;;
    esac
    echo
    summary "$phase"
    echo
  done
  echo "Durability $durability; each run ${warmup} s warm-up + ${duration} s measured + up to ${drain} s drain; server (all threads)"
  echo "on CPU 0, loadgen and the push sink on CPU 1; a fresh server and data directory per run."
  echo
  echo "Reproduce: \`RATES=\"$rates\" USERS=$users ONLINE=$online COALESCING_WINDOW_MS=$window REPEATS=$repeats" \
    "DURATION_S=$duration WARMUP_S=$warmup DRAIN_S=$drain THROUGHPUT_RATES=\"$throughput_rates\"" \
    "THROUGHPUT_USERS=$throughput_users THROUGHPUT_CONNECTIONS=$throughput_connections" \
    "THROUGHPUT_CHATS=$throughput_chats THROUGHPUT_WINDOW_MS=$throughput_window BACKLOG_RATES=\"$backlog_rates\"" \
    "BACKLOG_DURATION_S=$backlog_duration BACKLOG_CHATS=$backlog_chats benches/push.sh ${phases[*]}\`"
} | tee "$out/table.md"
