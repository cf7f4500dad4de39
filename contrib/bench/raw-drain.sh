#!/bin/sh
# raw-drain.sh: how fast one worker drains a pre-loaded backlog into the
# raw sink, and its peak RSS.
#
#   sh contrib/bench/raw-drain.sh [ENTRIES] [BATCH_SIZE]
#
# Starts a private redis-server and a private PostgreSQL cluster (default
# settings: fsync and synchronous_commit on) in a temporary directory,
# talking over Unix sockets (lib.sh, as the other benches); pre-loads
# ENTRIES (default 100000) commit-like entries with `redis-cli --pipe`;
# starts one worker under /usr/bin/time -v;
# polls XINFO GROUPS from outside until the group's lag and pending count
# are both 0; then stops the worker with SIGTERM. Prints entries/s (time
# from the worker's start until the backlog is drained and acked) and the
# worker's peak RSS. Build first: make.
set -eu

N=${1:-100000}
BATCH=${2:-500}
BUILD=${SLUICE_BUILD:-build}
STREAM=firehose:events
GROUP=firehose-processors

cd "$(dirname "$0")/../.."
BENCH_NAME=raw-drain
# shellcheck source=contrib/bench/lib.sh
. contrib/bench/lib.sh
need_bins sluiced
start_servers
# the worker runs under /usr/bin/time: stop it, then the servers
worker_pid=""
stop_worker() {
    if [ -n "$worker_pid" ]; then
        kill "$(pgrep -P "$worker_pid")" "$worker_pid" 2>/dev/null || true
    fi
    cleanup
}
trap stop_worker EXIT
"$PGBIN/createdb" -h "$tmp/pgsock" -U sluice sluice

cat >"$tmp/sluice.conf" <<CONF
redis_url = unix://$tmp/redis.sock
database_url = postgresql:///sluice?host=$tmp/pgsock&user=sluice
sink = raw
batch_size = $BATCH
log_level = info
CONF

# --- the backlog ---------------------------------------------------------
perl -e '
my $n = shift;
for my $i (1 .. $n) {
    my $data = sprintf(q({"repo":"did:plc:%024d","ops":[{"action":"create",)
        . q("path":"app.bsky.feed.like/3k%011d","cid":"bafyreib%052d",)
        . q("record":{"$type":"app.bsky.feed.like","subject":{"uri":)
        . q("at://did:plc:%024d/app.bsky.feed.post/3k%011d","cid":)
        . q("bafyreic%052d"},"createdAt":"2026-11-22T09:00:00.000Z"}}]}),
        $i % 50000, $i, $i, ($i * 7) % 50000, $i, $i);
    my @w = ("XADD", "firehose:events", "*", "type", "commit", "data",
        $data, "seq", $i);
    print "*" . scalar(@w) . "\r\n";
    print "\$" . length($_) . "\r\n$_\r\n" for @w;
}' "$N" >"$tmp/load.resp"
redis-cli -s "$tmp/redis.sock" --pipe <"$tmp/load.resp" >/dev/null
"$BUILD/sluiced" -c "$tmp/sluice.conf" --init-schema 2>"$tmp/init.log" || {
    cat "$tmp/init.log" >&2; exit 1; }
echo "pre-loaded $(redis-cli -s "$tmp/redis.sock" XLEN $STREAM) entries," \
    "batch_size $BATCH"

# --- the drain -------------------------------------------------------------
group_field() { # $1 = field name of XINFO GROUPS (one group)
    redis-cli -s "$tmp/redis.sock" XINFO GROUPS $STREAM 2>/dev/null |
        awk -v k="$1" 'prev == k { print; exit } { prev = $0 }'
}
start=$(date +%s.%N)
/usr/bin/time -v -o "$tmp/time.txt" "$BUILD/sluiced" -c "$tmp/sluice.conf" \
    --worker bench-1 2>"$tmp/worker.log" &
worker_pid=$!
while :; do
    lag=$(group_field lag)
    pending=$(group_field pending)
    if [ "$lag" = 0 ] && [ "$pending" = 0 ]; then break; fi
    if ! kill -0 "$worker_pid" 2>/dev/null; then
        echo "raw-drain: the worker died" >&2; cat "$tmp/worker.log" >&2; exit 1
    fi
    sleep 0.05
done
end=$(date +%s.%N)
# signal the worker itself, not /usr/bin/time (which would die unreported)
kill -TERM "$(pgrep -P "$worker_pid")"
wait "$worker_pid" || true
worker_pid=""
rows=$($as_pg psql -X -At -h "$tmp/pgsock" -U sluice -d sluice \
    -c 'select count(*) from events')
rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$tmp/time.txt")
# for scale: the RSS of the same binary doing nothing (its shared libraries)
/usr/bin/time -v -o "$tmp/base.txt" "$BUILD/sluiced" --version >/dev/null
base=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$tmp/base.txt")
cpu=$(awk -F': ' '/User time/ { u = $2 } /System time/ { s = $2 }
    END { printf "%.2f", u + s }' "$tmp/time.txt")
awk -v n="$N" -v s="$start" -v e="$end" -v rows="$rows" -v rss="$rss" -v base="$base" \
    -v cpu="$cpu" 'BEGIN {
    t = e - s
    printf "%-28s %s\n", "entries", n
    printf "%-28s %s\n", "rows written", rows
    printf "%-28s %.2f\n", "seconds to drain and ack", t
    printf "%-28s %.0f\n", "entries/s", n / t
    printf "%-28s %s\n", "worker CPU seconds", cpu
    printf "%-28s %.1f\n", "worker CPU us/entry", cpu * 1e6 / n
    printf "%-28s %s\n", "worker peak RSS (KiB)", rss
    printf "%-28s %s\n", "sluiced --version RSS (KiB)", base
}'
