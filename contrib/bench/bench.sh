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
set -eu

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
HZ=$(getconf CLK_TCK)

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

for b in sluiced sluicectl sluice-gen; do
    [ -x "$BUILD/$b" ] || die "$BUILD/$b is missing: build first (make)"
done
BUILD=$(cd "$BUILD" && pwd)

tmp=$(mktemp -d /tmp/sluice-bench.XXXXXX)
chmod 755 "$tmp"
as_pg=""
[ "$(id -u)" = 0 ] && as_pg="runuser -u nobody --"
redis_pid=""
sluiced_pid=""
gen_pid=""
cleanup() {
    trap '' INT TERM
    set +e
    [ -n "$gen_pid" ] && kill "$gen_pid" 2>/dev/null
    if [ -n "$sluiced_pid" ]; then
        kill -TERM "$sluiced_pid" 2>/dev/null
        wait "$sluiced_pid" 2>/dev/null
    fi
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null
    $as_pg "$PGBIN/pg_ctl" -D "$tmp/pg" -m immediate -w stop >/dev/null 2>&1
    [ -n "${BENCH_PGLOG:-}" ] && cp "$tmp/pgsock/postgres.log" "$BENCH_PGLOG"
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- servers ------------------------------------------------------------
redis-server --port 0 --unixsocket "$tmp/redis.sock" --unixsocketperm 777 \
    --dir "$tmp" --save '' --appendonly no --daemonize no \
    >"$tmp/redis.log" 2>&1 &
redis_pid=$!
mkdir "$tmp/pg" "$tmp/pgsock"
[ -n "$as_pg" ] && chown nobody "$tmp/pg" "$tmp/pgsock"
$as_pg "$PGBIN/initdb" -D "$tmp/pg" -U sluice --auth=trust -E UTF8 \
    --locale=C >/dev/null || die "initdb failed"
$as_pg "$PGBIN/pg_ctl" -D "$tmp/pg" -w -l "$tmp/pgsock/postgres.log" \
    -o "-k $tmp/pgsock -c listen_addresses='' -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all ${BENCH_PGOPTS:-}" \
    start >/dev/null ||
    die "PostgreSQL did not start"
for _ in $(seq 100); do
    redis-cli -s "$tmp/redis.sock" ping >/dev/null 2>&1 && break
    sleep 0.1
done
pg_pid=$(head -1 "$tmp/pg/postmaster.pid")

rcli() { redis-cli -s "$tmp/redis.sock" "$@"; }
# psql on database $1 (no variable of its own: sh has no locals)
psql_db() {
    PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -X -q -A -t \
        -v ON_ERROR_STOP=1 -h "$tmp/pgsock" -U sluice -d "$@"
}
db_url() { echo "postgresql:///$1?host=$tmp/pgsock&user=sluice"; }

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

# Sum of utime+stime+cutime+cstime (clock ticks) of the given pids.
ticks() {
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] && sed 's/^.*) //' "/proc/$p/stat"
    done | awk '{ s += $12 + $13 + $14 + $15 } END { print s + 0 }'
}
# A pid and its children.
tree() { echo "$1"; pgrep -P "$1" || true; }

# The group's lag and pending count as "LAG PENDING" ("- -" when there is
# no group yet).
group_state() {
    rcli XINFO GROUPS "$STREAM" 2>/dev/null | awk -v g="$GROUP" '
        prev == "name" { cur = $0 }
        prev == "pending" && cur == g { p = $0 }
        prev == "lag" && cur == g { l = ($0 == "" ? "-" : $0) }
        { prev = $0 }
        END { if (p == "") print "- -"; else print (l == "" ? "-" : l), p }'
}

now() { date +%s.%N; }

# Commit-latency percentiles over every worker's histogram of a
# `sluicectl stats --json` file: "p50 p90 p99" in ms (bucket upper bounds,
# at most 25 % above the latencies they stand for; ">65536" past them).
latency() {
    perl -MJSON::PP -e '
        local $/; my $j = decode_json(<STDIN>);
        my $le = $j->{latency_bucket_upper_ms} || [];
        my @h; my $n = 0;
        for my $w (@{ $j->{workers} || [] }) {
            my $hist = $w->{latency_ms}{histogram} or next;
            for my $i (0 .. $#$hist) { $h[$i] += $hist->[$i]; $n += $hist->[$i] }
        }
        my @out;
        for my $q (0.5, 0.9, 0.99) {
            if (!$n) { push @out, "-"; next }
            my ($c, $i) = (0, 0);
            for ($i = 0; $i <= $#h; $i++) { $c += $h[$i] // 0; last if $c >= $q * $n }
            push @out, defined $le->[$i] ? $le->[$i] : ">65536";
        }
        print "@out\n";' <"$1" 2>/dev/null || echo "- - -"
}

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
    dlk0=$(grep -c 'deadlock detected' "$tmp/pgsock/postgres.log" 2>/dev/null || true)
    pg0=$(ticks $(tree "$pg_pid"))
    rd0=$(ticks "$redis_pid")
    t0=$(now)
    "$BUILD/sluiced" -c "$conf" -s "database_url=$(db_url "$db")" \
        -s "parallel_consumers=$W" >>"$tmp/sluiced.out" 2>&1 &
    sluiced_pid=$!
    sup_rss=0
    wrk_rss=0
    while :; do
        kill -0 "$sluiced_pid" 2>/dev/null || die "sluiced exited: $(tail -5 "$tmp/sluiced.log" "$tmp/sluiced.out" 2>/dev/null)"
        r=$(ps -o rss= -p "$sluiced_pid" | tr -d ' ')
        [ -n "$r" ] && [ "$r" -gt "$sup_rss" ] && sup_rss=$r
        for c in $(pgrep -P "$sluiced_pid" || true); do
            r=$(ps -o rss= -p "$c" | tr -d ' ')
            [ -n "$r" ] && [ "$r" -gt "$wrk_rss" ] && wrk_rss=$r
        done
        set -- $(group_state)
        [ "$1" = 0 ] && [ "$2" = 0 ] && break
        sleep 0.2
    done
    # drained means the counters folded too (atproto: sluice_counter_delta
    # empty); that wait is part of the drain time
    while [ "$(psql_db "$db" -Atc "select coalesce((select 1 from sluice_counter_delta limit 1), 0)" 2>/dev/null || echo 0)" = 1 ]; do
        sleep 0.05
    done
    t1=$(now)
    sl=$(ticks $(tree "$sluiced_pid"))
    pg1=$(ticks $(tree "$pg_pid"))
    rd1=$(ticks "$redis_pid")
    "$BUILD/sluicectl" -c "$conf" stats --json >"$tmp/stats-w$W.json" 2>/dev/null || true
    lat=$(latency "$tmp/stats-w$W.json")
    kill -TERM "$sluiced_pid"
    wait "$sluiced_pid" || true
    sluiced_pid=""
    dead=$(rcli XLEN "$STREAM:dead")
    # where PostgreSQL's time went: every statement, nested ones too
    # (summed by text: a statement on a session's temp table has an id per session)
    psql_db "$db" -F ' | ' -c "select round(sum(s.total_exec_time))::bigint, sum(s.calls), sum(s.rows),
            left(regexp_replace(s.query, '\s+', ' ', 'g'), 100)
        from pg_stat_statements s join pg_database d on d.oid = s.dbid
        where d.datname = current_database() and s.query not like '%pg_stat_statements%'
        group by s.query order by 1 desc limit 16" >"$tmp/statements-w$W" 2>/dev/null || true
    # tables read whole during the run: a plan that scans one costs more
    # with every row the table holds
    psql_db "$db" -F ' | ' -c "select relname, seq_scan, seq_tup_read from pg_stat_user_tables
        where seq_tup_read > 0 order by seq_tup_read desc limit 12" >"$tmp/scans-w$W" 2>/dev/null || true
    # deadlocks PostgreSQL detected during the run (its own log, so that
    # any sluiced build can be measured), each one a batch retried
    dlk=$(( $(grep -c 'deadlock detected' "$tmp/pgsock/postgres.log" 2>/dev/null || true) - dlk0 ))

    awk -v w="$W" -v n="$N" -v t0="$t0" -v t1="$t1" -v sl="$sl" \
        -v pg="$((pg1 - pg0))" -v rd="$((rd1 - rd0))" -v hz="$HZ" \
        -v srss="$sup_rss" -v wrss="$wrk_rss" -v lat="$lat" -v dead="$dead" -v dlk="$dlk" \
        'BEGIN {
            s = t1 - t0; split(lat, l, " ");
            printf "%d %.3f %.0f %.3f %.3f %.3f %.1f %d %d %s %s %s %d %s\n",
                w, s, n / s, sl / hz, pg / hz, rd / hz,
                sl / hz * 1e6 / n, srss, wrss, l[1], l[2], l[3], dead, dlk
        }' >>"$results"
    say "W=$W: $(tail -1 "$results" | awk '{ printf "%s s, %s events/s", $2, $3 }')"
    last_db=$db
done

# ---- rows ---------------------------------------------------------------
tables=$(psql_db "$last_db" -c "select schemaname || '.' || relname
    from pg_stat_user_tables order by 1")
: >"$tmp/rows"
for t in $tables; do
    echo "$t $(psql_db "$last_db" -c "select count(*) from $t")" >>"$tmp/rows"
done

# ---- the COPY ceiling ----------------------------------------------------
# The final rows of the appview's tables only (sluice's own tables are its
# overhead), loaded with COPY into empty tables in one transaction; the
# median of 3 loads, each after a CHECKPOINT.
mkdir "$tmp/copy"
: >"$tmp/load.sql"
: >"$tmp/empty.sql"
while read -r t n; do
    case "$t" in *.sluice_*) continue ;; esac
    [ "$n" -gt 0 ] || continue
    psql_db "$last_db" -c "\\copy $t to '$tmp/copy/$t'"
    printf '\\copy %s from %s\n' "$t" "'$tmp/copy/$t'" >>"$tmp/load.sql"
    printf 'truncate %s;\n' "$t" >>"$tmp/empty.sql"
done <"$tmp/rows"
psql_db postgres -c "drop database if exists bench_copy" -c "create database bench_copy"
"$BUILD/sluiced" -c "$conf" -s "database_url=$(db_url bench_copy)" \
    --init-schema >>"$tmp/init.log" 2>&1 || die "init-schema (copy) failed"
: >"$tmp/copy-times"
for _ in 1 2 3; do
    psql_db bench_copy -f "$tmp/empty.sql" -c checkpoint >/dev/null
    c0=$(now)
    psql_db bench_copy -1 -f "$tmp/load.sql"
    c1=$(now)
    awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.3f\n", b - a }' >>"$tmp/copy-times"
done
copy_s=$(sort -n "$tmp/copy-times" | sed -n 2p)
while read -r t n; do
    case "$t" in *.sluice_*) continue ;; esac
    got=$(psql_db bench_copy -c "select count(*) from $t")
    [ "$got" = "$n" ] || die "COPY ceiling: $t has $got rows after the load, not $n"
done <"$tmp/rows"
ceiling=$(awk -v n="$N" -v s="$copy_s" 'BEGIN { printf "%.0f", n / s }')

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
        set -- $(group_state)
        if [ "$1" != - ] && [ "$2" != - ]; then
            live_last=$(($1 + $2))
            [ "$live_last" -gt "$live_max" ] && live_max=$live_last
        fi
        sleep 1
    done
    wait "$gen_pid" || true
    gen_pid=""
    for _ in $(seq 100); do
        set -- $(group_state)
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
    printf '%3s %8s %9s %9s %9s %9s %8s %8s %8s %14s %5s %9s\n' W seconds events/s \
        sluiced-s postgres-s redis-s us/event sup-RSS wrk-RSS \
        'p50/p90/p99ms' dead deadlocks
    while read -r w s eps sl pg rd us srss wrss p50 p90 p99 dead dlk; do
        printf '%3s %8s %9s %9s %9s %9s %8s %7sK %7sK %14s %5s %9s\n' "$w" "$s" \
            "$eps" "$sl" "$pg" "$rd" "$us" "$srss" "$wrss" \
            "$p50/$p90/$p99" "$dead" "$dlk"
    done <"$results"
    echo
    echo "COPY ceiling: the same final rows of the appview's tables loaded with"
    echo "COPY into the same empty tables (one transaction; median of" \
        "$(tr '\n' ' ' <"$tmp/copy-times" | sed 's/ $//; s/ /, /g') s):" \
        "$copy_s s -> $ceiling events/s"
    best=$(sort -k3 -n "$results" | tail -1 | awk '{ print $1, $3 }')
    echo "best: W=${best% *} at ${best#* } events/s; ratio to the ceiling:" \
        "$(awk -v e="${best#* }" -v c="$ceiling" 'BEGIN { printf "%.2f", e / c }')"
    if [ -s "$tmp/statements-w${best% *}" ]; then
        echo
        echo "PostgreSQL time per statement, W=${best% *} (pg_stat_statements, track = all;"
        echo "the statements inside sluice_apply_stage() are counted in it and on their own):"
        echo "      ms |  calls |   rows | statement"
        awk -F ' [|] ' '{ printf "%8s | %6s | %6s | %s\n", $1, $2, $3, $4 }' "$tmp/statements-w${best% *}"
    fi
    if [ -s "$tmp/scans-w${best% *}" ]; then
        echo
        echo "sequential scans, W=${best% *} (pg_stat_user_tables): table, scans, rows read"
        awk -F ' [|] ' '{ printf "  %-28s %8s %12s\n", $1, $2, $3 }' "$tmp/scans-w${best% *}"
    fi
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

perl -MJSON::PP -e '
    my ($res, $rows, $n, $copy, $ceil, $live, $sink, $seed, $lmax, $llast) = @ARGV;
    my %o = (events => $n + 0, seed => $seed + 0, sink => $sink,
             copy_seconds => $copy + 0, copy_ceiling_events_per_s => $ceil + 0);
    open my $f, "<", $res or die;
    my $best = 0;
    while (<$f>) {
        my @c = split;
        my %r; @r{qw(workers seconds events_per_s sluiced_cpu_s postgres_cpu_s
            redis_cpu_s sluiced_us_per_event supervisor_rss_kb worker_rss_kb
            latency_p50_ms latency_p90_ms latency_p99_ms dead_letters
            deadlock_retries)} = @c;
        $_ = ($_ eq "-" ? undef : $_ + 0) for values %r;
        $r{ratio_to_ceiling} = $ceil ? $r{events_per_s} / $ceil : undef;
        $best = $r{events_per_s} if $r{events_per_s} > $best;
        push @{ $o{runs} }, \%r;
    }
    $o{best_events_per_s} = $best;
    $o{ratio_to_ceiling} = $ceil ? $best / $ceil : undef;
    my @l = split " ", $live;
    $o{live_latency_ms} = { map { $_->[0] => ($_->[1] eq "-" ? undef : $_->[1] + 0) }
        ([p50 => $l[0]], [p90 => $l[1]], [p99 => $l[2]]) };
    $o{live_backlog_max} = $lmax eq "-" ? undef : $lmax + 0;
    $o{live_backlog_end} = $llast eq "-" ? undef : $llast + 0;
    open $f, "<", $rows or die;
    while (<$f>) { my ($t, $c) = split; $o{rows}{$t} = $c + 0 }
    print JSON::PP->new->canonical->pretty->encode(\%o);
' "$results" "$tmp/rows" "$N" "$copy_s" "$ceiling" "$live_lat" "$SINK" "$SEED" \
    "$live_max" "$live_last" >"$OUT.json"
say "figures written to $OUT.txt and $OUT.json"
