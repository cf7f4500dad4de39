#!/bin/sh
# bench.sh: `make bench`, sluiced draining a pre-loaded backlog of
# generated firehose events, with 1, 2 and 5 workers, against the COPY
# ceiling of the same rows.
#
#   BENCH_N=200000 BENCH_WORKERS="1 2 5" sh contrib/bench/bench.sh
#
# It starts a private redis-server and PostgreSQL cluster in a temporary
# directory (Unix sockets; PostgreSQL defaults: fsync and
# synchronous_commit on; pg_stat_statements loaded), and for each worker
# count W:
#   - a fresh database (sluiced --init-schema, then a CHECKPOINT) and a
#     fresh stream holding BENCH_N entries from sluice-gen (the same seed
#     every time);
#   - sluiced with W workers, timed from its start until the group's lag
#     and pending count are both 0 and the counters are folded;
#   - peak RSS of the supervisor and of the largest worker (ps, sampled),
#     the CPU time of sluiced, postgres and redis-server during the drain
#     (/proc/PID/stat of each process tree), the commit-latency
#     percentiles of the stats segment (sluicectl stats --json), the
#     deadlocks PostgreSQL detected, the time of every statement
#     (pg_stat_statements, track = all) and the row count of every table.
# Then the COPY ceiling: the final rows of the appview's tables (not
# sluice's own) are dumped and loaded with COPY into the same empty
# tables (same schema and indexes, one transaction), three times, each
# after a CHECKPOINT; ceiling = events / median COPY seconds, ratio =
# events/s / ceiling. Finally a live phase (BENCH_LIVE_SECONDS, default
# 20; 0 skips it): sluice-gen at 2,000 events/s into the running sluiced
# (the first W), the commit-latency percentiles at that rate and the
# group's backlog (lag + pending) sampled every second meanwhile.
#
# BENCH_PGLOG=FILE keeps PostgreSQL's log (deadlock details, for one);
# BENCH_PGOPTS adds server options (e.g. "-c session_preload_libraries=auto_explain").
# Also reported: the sequential scans of each table during the best run.
# Prints a table and writes bench-results.txt and bench-results.json (in
# the current directory, or BENCH_OUT). Not a test: nothing is asserted.
#
# BENCH_SINK=table, function or plugin: the shop example's events into
# that sink instead (shop.sh); atproto (the default) and raw stay here.
# The servers, the drain wait, the COPY ceiling and the report are
# lib.sh's, shared with shop.sh.
set -eu

case ${BENCH_SINK:-} in
table | function | plugin) exec sh "$(dirname "$0")/shop.sh" ;;
esac

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
N=${BENCH_N:-200000}
WORKERS=${BENCH_WORKERS:-1 2 5}
SEED=${BENCH_SEED:-42}
LIVE=${BENCH_LIVE_SECONDS:-20}
LIVE_RATE=${BENCH_LIVE_RATE:-2000}
SINK=${BENCH_SINK:-atproto}
OUT=${BENCH_OUT:-bench-results}
BUILD=${SLUICE_BUILD:-build}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
STREAM=firehose:events
GROUP=firehose-processors
BENCH_NAME=bench
# shellcheck source=contrib/bench/lib.sh
. contrib/bench/lib.sh

need_bins sluiced sluicectl sluice-gen

start_servers

# a build without a working atproto sink yet: benchmark the raw sink
psql_db postgres -c "create database bench_probe"
if [ "$SINK" = atproto ] && ! "$BUILD/sluiced" -s "redis_url=unix://$tmp/redis.sock" \
    -s "database_url=$(db_url bench_probe)" -s sink=atproto --init-schema \
    >"$tmp/probe.log" 2>&1; then
    say "no working atproto sink in this build ($(tail -1 "$tmp/probe.log")): benchmarking the raw sink"
    SINK=raw
fi

conf="$tmp/sluice.conf"
cat >"$conf" <<CONF
redis_url = unix://$tmp/redis.sock
stream_key = $STREAM
consumer_group = $GROUP
consumer_id = bench
sink = $SINK
log_level = info
log_target = $tmp/sluiced.log
CONF

results="$tmp/results"
: >"$results"
say "$N events, workers: $WORKERS, sink: $SINK, PostgreSQL defaults (fsync, synchronous_commit on)"

last_db=""
for W in $WORKERS; do
    db="bench_w$W"
    psql_db postgres -c "drop database if exists $db" -c "create database $db"
    "$BUILD/sluiced" -c "$conf" -s "database_url=$(db_url "$db")" \
        --init-schema >>"$tmp/init.log" 2>&1 || die "init-schema failed: $(cat "$tmp/init.log")"
    rcli DEL "$STREAM" >/dev/null
    "$BUILD/sluice-gen" -u "unix://$tmp/redis.sock" -k "$STREAM" -n "$N" \
        -s "$SEED" --maxlen 0 -q || die "sluice-gen failed"

    psql_db "$db" -c "create extension if not exists pg_stat_statements" \
        -c "select pg_stat_statements_reset()" -c "checkpoint" >/dev/null
    drain_start "$conf" "$W"
    wait_drained "$STREAM" "$GROUP"
    # drained means the counters folded too (atproto: sluice_counter_delta
    # empty); that wait is part of the drain time
    while [ "$(psql_db "$db" -Atc "select coalesce((select 1 from sluice_counter_delta limit 1), 0)" 2>/dev/null || echo 0)" = 1 ]; do
        sleep 0.05
    done
    drain_stop "$conf" "$W"
    dead=$(rcli XLEN "$STREAM:dead")
    pg_profile "$db" "$W"
    dlk=$(($(deadlocks) - dlk0))

    run_line "$W" "$N" "$t0" "$t1" "$sl" "$((pg1 - pg0))" "$((rd1 - rd0))" \
        "$sup_rss" "$wrk_rss" "$lat" "$dead" "$dlk" >>"$results"
    say "W=$W: $(tail -1 "$results" | awk '{ printf "%s s, %s events/s", $2, $3 }')"
    last_db=$db
done

# ---- rows ---------------------------------------------------------------
table_rows "$last_db"

# ---- the COPY ceiling ----------------------------------------------------
# The final rows of the appview's tables only (sluice's own tables are its
# overhead), loaded with COPY into empty tables in one transaction; the
# median of 3 loads, each after a CHECKPOINT.
psql_db postgres -c "drop database if exists bench_copy" -c "create database bench_copy"
"$BUILD/sluiced" -c "$conf" -s "database_url=$(db_url bench_copy)" \
    --init-schema >>"$tmp/init.log" 2>&1 || die "init-schema (copy) failed"
copy_ceiling "$last_db" bench_copy "$N"

# ---- live latency ----------------------------------------------------------
live_lat="- - -"
live_max=-
live_last=-
if [ "$LIVE" -gt 0 ]; then
    W1=$(echo "$WORKERS" | awk '{ print $1 }')
    rcli DEL "$STREAM" >/dev/null
    "$BUILD/sluiced" -c "$conf" -s "database_url=$(db_url "$last_db")" \
        -s "parallel_consumers=$W1" >>"$tmp/sluiced.out" 2>&1 &
    sluiced_pid=$!
    sleep 1
    "$BUILD/sluice-gen" -u "unix://$tmp/redis.sock" -k "$STREAM" \
        -n "$((LIVE * LIVE_RATE))" -r "$LIVE_RATE" -s "$((SEED + 1))" -q &
    gen_pid=$!
    # the group's backlog (lag + pending), sampled every second while the
    # generator runs: flat and about a batch per worker when sluiced keeps up
    live_max=0
    live_last=0
    while kill -0 "$gen_pid" 2>/dev/null; do
        set -- $(group_state "$STREAM" "$GROUP")
        if [ "$1" != - ] && [ "$2" != - ]; then
            live_last=$(($1 + $2))
            [ "$live_last" -gt "$live_max" ] && live_max=$live_last
        fi
        sleep 1
    done
    wait "$gen_pid" || true
    gen_pid=""
    for _ in $(seq 100); do
        set -- $(group_state "$STREAM" "$GROUP")
        [ "$1" = 0 ] && [ "$2" = 0 ] && break
        sleep 0.2
    done
    "$BUILD/sluicectl" -c "$conf" stats --json >"$tmp/stats-live.json" 2>/dev/null || true
    live_lat=$(latency "$tmp/stats-live.json")
    kill -TERM "$sluiced_pid"
    wait "$sluiced_pid" || true
    sluiced_pid=""
fi

# ---- report ---------------------------------------------------------------
{
    echo "sluice bench: $N generated events (seed $SEED), sink $SINK, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(nproc) CPUs, $(uname -r); PostgreSQL defaults (fsync on, synchronous_commit on)"
    echo
    print_runs "$results"
    echo
    echo "COPY ceiling: the same final rows of the appview's tables loaded with"
    echo "COPY into the same empty tables (one transaction; median of" \
        "$(tr '\n' ' ' <"$tmp/copy-times" | sed 's/ $//; s/ /, /g') s):" \
        "$copy_s s -> $ceiling events/s"
    best=$(sort -k3 -n "$results" | tail -1 | awk '{ print $1, $3 }')
    echo "best: W=${best% *} at ${best#* } events/s; ratio to the ceiling:" \
        "$(awk -v e="${best#* }" -v c="$ceiling" 'BEGIN { printf "%.2f", e / c }')"
    print_profile "${best% *}" "sluice_apply_stage()"
    if [ "$LIVE" -gt 0 ]; then
        echo "live: $LIVE_RATE events/s for ${LIVE}s; commit latency p50/p90/p99 (ms," \
            "histogram bucket bounds): $(echo "$live_lat" | tr ' ' /)"
        echo "live backlog (lag + pending, sampled each second): max $live_max," \
            "at the end $live_last entries"
    fi
    echo
    echo "rows (W=${last_db#bench_w}):"
    while read -r t n; do printf '  %-36s %9s\n' "$t" "$n"; done <"$tmp/rows"
    echo
    echo "us/event = sluiced CPU (supervisor + workers) per event; *-s = CPU seconds"
    echo "during the drain; RSS = peak resident set (supervisor, largest worker)."
} >"$OUT.txt"
cat "$OUT.txt"

# shellcheck disable=SC2086 # "p50 p90 p99": word splitting wanted
set -- $live_lat
write_json "$OUT.json" "$results" "events=$N" "seed=$SEED" "sink=$SINK" \
    "copy_seconds=$copy_s" "copy_ceiling_events_per_s=$ceiling" \
    "live_latency_ms.p50=$1" "live_latency_ms.p90=$2" "live_latency_ms.p99=$3" \
    "live_backlog_max=$live_max" "live_backlog_end=$live_last"
say "figures written to $OUT.txt and $OUT.json"
