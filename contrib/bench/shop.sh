#!/bin/sh
# shop.sh: `BENCH_SINK=table|function|plugin make bench` (bench.sh hands
# over to it): sluiced draining a pre-loaded backlog of a shop's events
# into one of the generic sinks, set up as its example is, with 1, 2 and
# 5 workers, against the COPY ceiling of the same final rows.
#
#   BENCH_SINK=table BENCH_N=100000 BENCH_WORKERS="1 2 5" sh contrib/bench/shop.sh
#
# The sinks and what they run:
#   table     contrib/examples/shop/: shop.sql, and sluice.conf as it is
#             (its three pipelines, users, orders and payments, each on
#             its stream with its group; W workers each, so 3 W in all),
#             with the private servers' URLs, log and stats segment put
#             before its first section; sign-ups (flat fields) to
#             shop:users, order events (the order as JSON in `data`) to
#             shop:orders, payments (flat fields) to shop:payments
#   function  contrib/examples/function/running-totals.sql (shop_apply):
#             sink = function, function = shop_apply on shop:events
#   plugin    build/examples/required-fields.so with its
#             required-fields.sql: sink = plugin, plugin.required =
#             order_id,user_id on shop:events
# The events are shop-gen.pl's (BENCH_N of them, default 100,000, seed
# BENCH_SEED, default 42: the same every run): orders placed, paid (a
# payment now and then sent twice) and shipped, loaded with
# `redis-cli --pipe`; the counts are over every stream.
#
# Servers as bench.sh's (lib.sh: private redis-server and PostgreSQL on
# Unix sockets in a temporary directory, PostgreSQL defaults: fsync and
# synchronous_commit on). For each worker count W: a fresh database with
# the example's SQL and fresh streams holding the events; sluiced with
# W workers (parallel_consumers = W), timed from its start until every
# group's lag and pending count are 0; the CPU time of sluiced, postgres
# and redis-server during the drain, peak RSS, commit latency, dead
# letters, deadlocks, PostgreSQL's time per statement and the final row
# counts (which should not depend on W: a warning says when they do).
# Then the COPY ceiling: the final rows of the example's tables, dumped
# and loaded with COPY into the same empty tables of a database with the
# example's SQL (one transaction), three times after a CHECKPOINT;
# ceiling = events / median COPY seconds; each run's ratio = events/s /
# ceiling. Prints a table and writes bench-results.txt and .json (or
# BENCH_OUT.txt, .json). Not a test: nothing is asserted.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
N=${BENCH_N:-100000}
WORKERS=${BENCH_WORKERS:-1 2 5}
SEED=${BENCH_SEED:-42}
SINK=${BENCH_SINK:-table}
OUT=${BENCH_OUT:-bench-results}
BUILD=${SLUICE_BUILD:-build}
EX=contrib/examples
BENCH_NAME=bench
# shellcheck source=contrib/bench/lib.sh
. contrib/bench/lib.sh

need_bins sluiced sluicectl
case $SINK in
table)
    SQL=$EX/shop/shop.sql
    EXCONF=$EX/shop/sluice.conf
    FUNC=""
    ;;
function)
    SQL=$EX/function/running-totals.sql
    FUNC="shop_apply()"
    ;;
plugin)
    SQL=$EX/plugin/required-fields.sql
    FUNC=""
    PLUGIN=$BUILD/examples/required-fields.so
    [ -f "$PLUGIN" ] || die "$PLUGIN is missing: build first (make)"
    ;;
*) die "BENCH_SINK=$SINK: shop.sh runs table, function or plugin" ;;
esac

start_servers

# ---- the configuration -----------------------------------------------------
# The private servers, the log and a stats segment of this run's own go
# before anything else (a section may not set the supervisor's settings);
# database_url is given with -s for each database.
conf="$tmp/sluice.conf"
cat >"$conf" <<CONF
# $0: BENCH_SINK=$SINK
redis_url = unix://$tmp/redis.sock
consumer_id = bench
log_level = info
log_target = $tmp/sluiced.log
stats_name = /sluice-bench-shop-$$
CONF
if [ "$SINK" = table ]; then
    # the example's file as it is, but for its own servers
    echo "# $EXCONF, without its redis_url and database_url" >>"$conf"
    grep -Ev '^[[:space:]]*(redis_url|database_url)[[:space:]]*=' "$EXCONF" >>"$conf"
    # "NAME STREAM GROUP" of each of its pipelines
    awk '
        function val(v) { v = $0; sub(/^[^=]*=[ \t]*/, "", v); sub(/[ \t]+$/, "", v); return v }
        /^[ \t]*\[pipeline / { if (p != "") print p, s, g; p = $2; sub(/\].*/, "", p); s = g = ""; next }
        p != "" && /^[ \t]*stream_key[ \t]*=/ { s = val() }
        p != "" && /^[ \t]*consumer_group[ \t]*=/ { g = val() }
        END { if (p != "") print p, s, g }' "$EXCONF" >"$tmp/pipelines"
    users=$(awk '$1 == "users" { print $2 }' "$tmp/pipelines")
    orders=$(awk '$1 == "orders" { print $2 }' "$tmp/pipelines")
    payments=$(awk '$1 == "payments" { print $2 }' "$tmp/pipelines")
    if [ -z "$users" ] || [ -z "$orders" ] || [ -z "$payments" ] ||
        [ "$(awk '$3 == "" { n++ } END { print n + 0 }' "$tmp/pipelines")" != 0 ]; then
        die "$EXCONF: no users, orders and payments pipelines, each with stream_key and consumer_group"
    fi
    gen_args="-f table --users $users --orders $orders --payments $payments"
    config_note="$EXCONF: $(wc -l <"$tmp/pipelines") pipelines ($(awk '{ printf "%s%s", s, $1; s = ", " }' "$tmp/pipelines")), W workers each"
else
    cat >>"$conf" <<CONF
stream_key = shop:events
consumer_group = shop-events
CONF
    if [ "$SINK" = function ]; then
        printf 'sink = function\nfunction = shop_apply\n' >>"$conf"
        config_note="sink = function, function = shop_apply ($SQL)"
    else
        printf 'sink = plugin\nplugin = %s\nplugin.required = order_id,user_id\n' \
            "$PLUGIN" >>"$conf"
        config_note="sink = plugin, plugin = ${PLUGIN#"$ROOT"/} ($SQL), plugin.required = order_id,user_id"
    fi
    echo "main shop:events shop-events" >"$tmp/pipelines"
    gen_args="-f flat --stream shop:events"
fi
"$BUILD/sluiced" -c "$conf" -s "database_url=$(db_url postgres)" --check-config \
    >"$tmp/check.log" 2>&1 || die "the configuration is refused: $(tail -5 "$tmp/check.log")"
# shellcheck disable=SC2046 # the pairs: word splitting wanted
set -- $(awk '{ print $2, $3 }' "$tmp/pipelines")
pairs="$*"

# ---- the events ---------------------------------------------------------------
# shellcheck disable=SC2086 # the arguments: word splitting wanted
perl contrib/bench/shop-gen.pl -n "$N" -s "$SEED" $gen_args >"$tmp/events.resp" ||
    die "shop-gen.pl failed"

results="$tmp/results"
: >"$results"
say "shop example, sink $SINK: $N events, workers: $WORKERS, PostgreSQL defaults (fsync, synchronous_commit on)"

last_db=""
for W in $WORKERS; do
    db="shop_w$W"
    psql_db postgres -c "drop database if exists $db" -c "create database $db"
    psql_db "$db" -f "$SQL" >/dev/null || die "$SQL did not load"
    awk '{ print $2; print $2 ":dead" }' "$tmp/pipelines" | while read -r k; do
        rcli DEL "$k" >/dev/null
    done
    rcli --pipe <"$tmp/events.resp" >"$tmp/pipe.log" 2>&1 || true
    grep -q '^errors: 0, replies: '"$N"'$' "$tmp/pipe.log" ||
        die "redis-cli --pipe: $(tail -1 "$tmp/pipe.log")"
    : >"$tmp/streams"
    while read -r _ s _; do echo "$s $(rcli XLEN "$s")" >>"$tmp/streams"; done <"$tmp/pipelines"

    psql_db "$db" -c "create extension if not exists pg_stat_statements" \
        -c "checkpoint" -c "select pg_stat_statements_reset()" >/dev/null
    drain_start "$conf" "$W"
    # shellcheck disable=SC2086 # the pairs: word splitting wanted
    wait_drained $pairs
    drain_stop "$conf" "$W"
    dead=0
    while read -r _ s _; do dead=$((dead + $(rcli XLEN "$s:dead"))); done <"$tmp/pipelines"
    pg_profile "$db" "$W"
    dlk=$(($(deadlocks) - dlk0))

    run_line "$W" "$N" "$t0" "$t1" "$sl" "$((pg1 - pg0))" "$((rd1 - rd0))" \
        "$sup_rss" "$wrk_rss" "$lat" "$dead" "$dlk" >>"$results"
    say "W=$W: $(tail -1 "$results" | awk '{ printf "%s s, %s events/s", $2, $3 }')"
    table_rows "$db"
    if [ -n "$last_db" ] && ! cmp -s "$tmp/rows" "$tmp/rows-prev"; then
        say "W=$W: the row counts differ from W=${last_db#shop_w}'s:" \
            "$(tr '\n' ' ' <"$tmp/rows") vs $(tr '\n' ' ' <"$tmp/rows-prev")"
    fi
    cp "$tmp/rows" "$tmp/rows-prev"
    last_db=$db
done
[ -n "$last_db" ] || die "BENCH_WORKERS is empty"

# ---- the COPY ceiling ----------------------------------------------------
# The final rows of the example's tables, loaded with COPY into the same
# empty tables (the example's SQL) in one transaction; the median of 3
# loads, each after a CHECKPOINT.
psql_db postgres -c "drop database if exists shop_copy" -c "create database shop_copy"
psql_db shop_copy -f "$SQL" >/dev/null || die "$SQL did not load (copy)"
copy_ceiling "$last_db" shop_copy "$N"

# ---- report ---------------------------------------------------------------
best=$(sort -k3 -n "$results" | tail -1 | awk '{ print $1, $3 }')
{
    echo "sluice bench: the shop example, sink $SINK, $N events (seed $SEED), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "streams: $(awk '{ printf "%s%s (%s entries)", s, $1, $2; s = ", " }' "$tmp/streams")"
    echo "config: $config_note"
    echo "machine: $(nproc) CPUs, $(uname -r); PostgreSQL defaults (fsync on, synchronous_commit on)"
    echo
    print_runs "$results" "$ceiling"
    echo
    echo "COPY ceiling: the same final rows of the example's tables loaded with"
    echo "COPY into the same empty tables (one transaction; median of" \
        "$(tr '\n' ' ' <"$tmp/copy-times" | sed 's/ $//; s/ /, /g') s):" \
        "$copy_s s -> $ceiling events/s"
    echo "best: W=${best% *} at ${best#* } events/s; ratio to the ceiling:" \
        "$(awk -v e="${best#* }" -v c="$ceiling" 'BEGIN { printf "%.2f", e / c }')"
    print_profile "${best% *}" "$FUNC"
    echo
    echo "rows (W=${last_db#shop_w}):"
    while read -r t n; do printf '  %-36s %9s\n' "$t" "$n"; done <"$tmp/rows"
    echo
    echo "events/s = events over every stream / seconds from sluiced's start until"
    echo "every group's lag and pending are 0; ratio = events/s / COPY ceiling;"
    echo "us/event = sluiced CPU (supervisor + workers) per event; *-s = CPU seconds"
    echo "during the drain; RSS = peak resident set (supervisor, largest worker)."
} >"$OUT.txt"
cat "$OUT.txt"

# shellcheck disable=SC2046 # "KEY=VALUE" per stream: word splitting wanted
write_json "$OUT.json" "$results" "events=$N" "seed=$SEED" "sink=$SINK" \
    "example=shop" "sql=$SQL" "pipelines=$(wc -l <"$tmp/pipelines")" \
    $(awk '{ printf "streams.%s=%s\n", $1, $2 }' "$tmp/streams") \
    "copy_seconds=$copy_s" "copy_ceiling_events_per_s=$ceiling"
say "figures written to $OUT.txt and $OUT.json"
