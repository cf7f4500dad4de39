# shellcheck shell=sh disable=SC2034 # the variables are the sourcing script's
# lib.sh: what the drain benches share (bench.sh, shop.sh); sourced, not
# run. The sourcing script sets BENCH_NAME (its name in messages) and
# BUILD, then calls need_bins and start_servers:
#
#   need_bins B...     $BUILD/B must exist (build first); BUILD made absolute
#   start_servers      a temporary directory ($tmp) holding a private
#                      redis-server ($tmp/redis.sock) and PostgreSQL cluster
#                      ($tmp/pgsock; defaults: fsync and synchronous_commit
#                      on; pg_stat_statements loaded, track = all;
#                      BENCH_PGOPTS adds server options), run as nobody when
#                      started as root; an EXIT trap stops them (and
#                      $sluiced_pid, $gen_pid), keeps the server's log in
#                      BENCH_PGLOG when set, and removes $tmp
#   rcli, psql_db DB, db_url DB     redis-cli and psql on them, a database URL
#   ticks PID..., tree PID, now     CPU ticks, a pid and its children, the time
#   group_state STREAM GROUP        "LAG PENDING" ("- -": no group yet)
#   wait_drained STREAM GROUP...    until every group's lag and pending are
#                      0, sampling the peak RSS of $sluiced_pid ($sup_rss)
#                      and of its largest child ($wrk_rss), KiB
#   latency FILE       p50 p90 p99 commit latency of `sluicectl stats --json`
#   pg_profile DB TAG  statements ($tmp/statements-TAG) and sequential
#                      scans ($tmp/scans-TAG) of DB since the last reset
#   deadlocks          deadlocks in the server's log so far
#   run_line W N T0 T1 SLUICED-TICKS PG-TICKS REDIS-TICKS SUP-RSS WRK-RSS
#            "P50 P90 P99" DEAD DEADLOCKS
#                      one line of the results file (the columns print_runs
#                      and write_json read)
#   table_rows DB      "schema.table rows" of every table of DB in $tmp/rows
#   copy_ceiling SRC DST N   the COPY ceiling (below): sets copy_s, ceiling
#   print_runs FILE [CEILING]   the results table (with CEILING: a column
#                      with each run's ratio to it)
#   print_profile TAG [FUNCTION]   the statements and scans pg_profile
#                      kept (FUNCTION: the one whose statements nest)
#   write_json FILE RESULTS KEY=VALUE...   the figures as JSON ("-": null;
#                      a dotted key nests: live_latency_ms.p50)

HZ=$(getconf CLK_TCK)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

say() { printf '%s: %s\n' "${BENCH_NAME:-bench}" "$*" >&2; }
die() {
    say "$*"
    exit 1
}

need_bins() {
    for _b in "$@"; do
        [ -x "$BUILD/$_b" ] || die "$BUILD/$_b is missing: build first (make)"
    done
    BUILD=$(cd "$BUILD" && pwd)
}

tmp=""
as_pg=""
redis_pid=""
sluiced_pid=""
gen_pid=""
pg_pid=""
cleanup() {
    trap '' INT TERM HUP PIPE
    set +e
    [ -n "$gen_pid" ] && kill "$gen_pid" 2>/dev/null
    if [ -n "$sluiced_pid" ]; then
        kill -TERM "$sluiced_pid" 2>/dev/null
        wait "$sluiced_pid" 2>/dev/null
    fi
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null
    [ -n "$tmp" ] || return 0
    $as_pg "$PGBIN/pg_ctl" -D "$tmp/pg" -m immediate -w stop >/dev/null 2>&1
    [ -n "${BENCH_PGLOG:-}" ] && cp "$tmp/pgsock/postgres.log" "$BENCH_PGLOG"
    rm -rf "$tmp"
}

start_servers() {
    tmp=$(mktemp -d /tmp/sluice-bench.XXXXXX)
    chmod 755 "$tmp"
    [ "$(id -u)" = 0 ] && as_pg="runuser -u nobody --"
    trap cleanup EXIT
    # a signal ends the bench through the EXIT trap (a closed pipe too:
    # `sh bench.sh | head` must not leave the servers running)
    trap 'exit 130' INT TERM HUP PIPE
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
}

rcli() { redis-cli -s "$tmp/redis.sock" "$@"; }
# psql on database $1 (no variable of its own: sh has no locals)
psql_db() {
    PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -X -q -A -t \
        -v ON_ERROR_STOP=1 -h "$tmp/pgsock" -U sluice -d "$@"
}
db_url() { echo "postgresql:///$1?host=$tmp/pgsock&user=sluice"; }

# Sum of utime+stime+cutime+cstime (clock ticks) of the given pids.
ticks() {
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] && sed 's/^.*) //' "/proc/$p/stat"
    done | awk '{ s += $12 + $13 + $14 + $15 } END { print s + 0 }'
}
# A pid and its children.
tree() {
    echo "$1"
    pgrep -P "$1" || true
}

now() { date +%s.%N; }

# The lag and pending count of group $2 on stream $1 as "LAG PENDING"
# ("- -" when there is no group yet).
group_state() {
    rcli XINFO GROUPS "$1" 2>/dev/null | awk -v g="$2" '
        prev == "name" { cur = $0 }
        prev == "pending" && cur == g { p = $0 }
        prev == "lag" && cur == g { l = ($0 == "" ? "-" : $0) }
        { prev = $0 }
        END { if (p == "") print "- -"; else print (l == "" ? "-" : l), p }'
}

# Wait until the lag and pending count of every STREAM GROUP pair given
# are 0, sampling RSS every 0.2 s; sluiced ($sluiced_pid) exiting meanwhile
# ends the bench.
wait_drained() {
    sup_rss=0
    wrk_rss=0
    _wd_all="$*"
    [ -n "$_wd_all" ] || die "wait_drained: no stream and group given"
    while :; do
        kill -0 "$sluiced_pid" 2>/dev/null ||
            die "sluiced exited: $(tail -5 "$tmp/sluiced.log" "$tmp/sluiced.out" 2>/dev/null)"
        _wd_r=$(ps -o rss= -p "$sluiced_pid" | tr -d ' ')
        [ -n "$_wd_r" ] && [ "$_wd_r" -gt "$sup_rss" ] && sup_rss=$_wd_r
        for _wd_c in $(pgrep -P "$sluiced_pid" || true); do
            _wd_r=$(ps -o rss= -p "$_wd_c" | tr -d ' ')
            [ -n "$_wd_r" ] && [ "$_wd_r" -gt "$wrk_rss" ] && wrk_rss=$_wd_r
        done
        _wd_done=1
        _wd_pairs=$_wd_all
        while [ -n "$_wd_pairs" ]; do
            # shellcheck disable=SC2086 # the pairs: word splitting wanted
            set -- $_wd_pairs
            _wd_st=$(group_state "$1" "$2")
            [ "$_wd_st" = "0 0" ] || _wd_done=0
            shift 2
            _wd_pairs="$*"
            [ "$_wd_done" = 1 ] || break
        done
        [ "$_wd_done" = 1 ] && break
        sleep 0.05
    done
}

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

# Where PostgreSQL's time went in database $1 since the last
# pg_stat_statements_reset(): every statement, nested ones too (summed by
# text: a statement on a session's temp table has an id per session), and
# the tables read whole (a plan that scans one costs more with every row
# the table holds).
pg_profile() {
    psql_db "$1" -F ' | ' -c "select round(sum(s.total_exec_time))::bigint, sum(s.calls), sum(s.rows),
            left(regexp_replace(s.query, '\s+', ' ', 'g'), 100)
        from pg_stat_statements s join pg_database d on d.oid = s.dbid
        where d.datname = current_database() and s.query not like '%pg_stat_statements%'
        group by s.query order by 1 desc limit 16" >"$tmp/statements-$2" 2>/dev/null || true
    psql_db "$1" -F ' | ' -c "select relname, seq_scan, seq_tup_read from pg_stat_user_tables
        where seq_tup_read > 0 order by seq_tup_read desc limit 12" >"$tmp/scans-$2" 2>/dev/null || true
}

# The deadlocks PostgreSQL detected so far (its own log, so that any
# sluiced build can be measured), each one a batch retried.
deadlocks() { grep -c 'deadlock detected' "$tmp/pgsock/postgres.log" 2>/dev/null || true; }

run_line() {
    awk -v w="$1" -v n="$2" -v t0="$3" -v t1="$4" -v sl="$5" -v pg="$6" \
        -v rd="$7" -v hz="$HZ" -v srss="$8" -v wrss="$9" -v lat="${10}" \
        -v dead="${11}" -v dlk="${12}" \
        'BEGIN {
            s = t1 - t0; split(lat, l, " ");
            printf "%d %.3f %.0f %.3f %.3f %.3f %.1f %d %d %s %s %s %d %s\n",
                w, s, n / s, sl / hz, pg / hz, rd / hz,
                sl / hz * 1e6 / n, srss, wrss, l[1], l[2], l[3], dead, dlk
        }'
}

table_rows() {
    : >"$tmp/rows"
    for _t in $(psql_db "$1" -c "select schemaname || '.' || relname
            from pg_stat_user_tables order by 1"); do
        echo "$_t $(psql_db "$1" -c "select count(*) from $_t")" >>"$tmp/rows"
    done
}

# The COPY ceiling: the rows table_rows listed ($tmp/rows; sluice's own
# sluice_* tables left out, they are its overhead), dumped from database
# $1 and loaded with COPY into the same empty tables of database $2 (made
# by the caller with the same schema and indexes), in one transaction;
# the median of 3 loads, each after a CHECKPOINT. copy_s = that median,
# ceiling = $3 events / copy_s; $tmp/copy-times holds the 3 times.
copy_ceiling() {
    rm -rf "$tmp/copy"
    mkdir "$tmp/copy"
    : >"$tmp/load.sql"
    : >"$tmp/empty.sql"
    while read -r _t _n; do
        case "$_t" in *.sluice_*) continue ;; esac
        [ "$_n" -gt 0 ] || continue
        psql_db "$1" -c "\\copy $_t to '$tmp/copy/$_t'"
        printf '\\copy %s from %s\n' "$_t" "'$tmp/copy/$_t'" >>"$tmp/load.sql"
        printf 'truncate %s;\n' "$_t" >>"$tmp/empty.sql"
    done <"$tmp/rows"
    : >"$tmp/copy-times"
    for _ in 1 2 3; do
        psql_db "$2" -f "$tmp/empty.sql" -c checkpoint >/dev/null
        _c0=$(now)
        psql_db "$2" -1 -f "$tmp/load.sql"
        _c1=$(now)
        awk -v a="$_c0" -v b="$_c1" 'BEGIN { printf "%.3f\n", b - a }' >>"$tmp/copy-times"
    done
    copy_s=$(sort -n "$tmp/copy-times" | sed -n 2p)
    while read -r _t _n; do
        case "$_t" in *.sluice_*) continue ;; esac
        _got=$(psql_db "$2" -c "select count(*) from $_t")
        [ "$_got" = "$_n" ] || die "COPY ceiling: $_t has $_got rows after the load, not $_n"
    done <"$tmp/rows"
    ceiling=$(awk -v n="$3" -v s="$copy_s" 'BEGIN { printf "%.0f", n / s }')
}

print_runs() {
    if [ -n "${2:-}" ]; then
        printf '%3s %8s %9s %6s %9s %9s %9s %8s %8s %8s %14s %5s %9s\n' W seconds \
            events/s ratio sluiced-s postgres-s redis-s us/event sup-RSS wrk-RSS \
            'p50/p90/p99ms' dead deadlocks
    else
        printf '%3s %8s %9s %9s %9s %9s %8s %8s %8s %14s %5s %9s\n' W seconds events/s \
            sluiced-s postgres-s redis-s us/event sup-RSS wrk-RSS \
            'p50/p90/p99ms' dead deadlocks
    fi
    while read -r _w _s _eps _sl _pg _rd _us _srss _wrss _p50 _p90 _p99 _dead _dlk; do
        if [ -n "${2:-}" ]; then
            printf '%3s %8s %9s %6s ' "$_w" "$_s" "$_eps" \
                "$(awk -v e="$_eps" -v c="$2" 'BEGIN { printf "%.2f", c ? e / c : 0 }')"
        else
            printf '%3s %8s %9s ' "$_w" "$_s" "$_eps"
        fi
        printf '%9s %9s %9s %8s %7sK %7sK %14s %5s %9s\n' "$_sl" "$_pg" "$_rd" \
            "$_us" "$_srss" "$_wrss" "$_p50/$_p90/$_p99" "$_dead" "$_dlk"
    done <"$1"
}

print_profile() {
    if [ -s "$tmp/statements-$1" ]; then
        echo
        if [ -n "${2:-}" ]; then
            echo "PostgreSQL time per statement, W=$1 (pg_stat_statements, track = all;"
            echo "the statements inside $2 are counted in it and on their own):"
        else
            echo "PostgreSQL time per statement, W=$1 (pg_stat_statements, track = all):"
        fi
        echo "      ms |  calls |   rows | statement"
        awk -F ' [|] ' '{ printf "%8s | %6s | %6s | %s\n", $1, $2, $3, $4 }' "$tmp/statements-$1"
    fi
    if [ -s "$tmp/scans-$1" ]; then
        echo
        echo "sequential scans, W=$1 (pg_stat_user_tables): table, scans, rows read"
        awk -F ' [|] ' '{ printf "  %-28s %8s %12s\n", $1, $2, $3 }' "$tmp/scans-$1"
    fi
}

write_json() {
    _wj_out=$1
    _wj_res=$2
    shift 2
    perl -MJSON::PP -e '
        my ($res, $rows, @kv) = @ARGV;
        my %o;
        for (@kv) {
            my ($k, $v) = split /=/, $_, 2;
            $v = $v eq "-" ? undef : $v =~ /^-?[0-9.]+(e[-+]?[0-9]+)?$/ ? $v + 0 : $v;
            my @p = split /\./, $k;
            my $h = \%o;
            $h = $h->{ shift @p } //= {} while @p > 1;
            $h->{ $p[0] } = $v;
        }
        my $ceil = $o{copy_ceiling_events_per_s};
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
        open $f, "<", $rows or die;
        while (<$f>) { my ($t, $c) = split; $o{rows}{$t} = $c + 0 }
        print JSON::PP->new->canonical->pretty->encode(\%o);
    ' "$_wj_res" "$tmp/rows" "$@" >"$_wj_out"
}

# The timed part of one run. drain_start CONF W: note the deadlock count
# and the CPU ticks of PostgreSQL and Redis, then start sluiced with W
# workers on database $db (sets dlk0 pg0 rd0 t0 sluiced_pid). The caller
# waits for the drain, then drain_stop CONF W: the end time, the CPU
# ticks of every process, the latency percentiles (sluicectl stats
# --json, kept as $tmp/stats-wW.json), and sluiced stopped (sets t1 sl
# pg1 rd1 lat).
drain_start() {
    dlk0=$(deadlocks)
    # shellcheck disable=SC2046 # the pids: word splitting wanted
    pg0=$(ticks $(tree "$pg_pid"))
    rd0=$(ticks "$redis_pid")
    t0=$(now)
    "$BUILD/sluiced" -c "$1" -s "database_url=$(db_url "$db")" \
        -s "parallel_consumers=$2" >>"$tmp/sluiced.out" 2>&1 &
    sluiced_pid=$!
}

drain_stop() {
    t1=$(now)
    # shellcheck disable=SC2046 # the pids: word splitting wanted
    sl=$(ticks $(tree "$sluiced_pid"))
    # shellcheck disable=SC2046
    pg1=$(ticks $(tree "$pg_pid"))
    rd1=$(ticks "$redis_pid")
    "$BUILD/sluicectl" -c "$1" stats --json >"$tmp/stats-w$2.json" 2>/dev/null || true
    lat=$(latency "$tmp/stats-w$2.json")
    kill -TERM "$sluiced_pid"
    wait "$sluiced_pid" || true
    sluiced_pid=""
}
