#!/bin/sh
# firehose.sh: `make bench-firehose`, how fast the firehose reader
# (sluiced --firehose) takes a relay's frames into a Redis stream, and
# what it costs.
#
#   BENCH_FH_FRAMES=300000 sh contrib/bench/firehose.sh
#
# The relay is build/sluice-relay playing the recorded frames of
# ${SLUICE_BLUESKY_DATA:-../shared/data/bluesky}/frames.bin.zst (150 real
# frames, commits with their CAR blocks) LOOPS = ceil(BENCH_FH_FRAMES / 150)
# times with rising seq, over loopback, as fast as the reader takes them:
# the reader, not the network or the relay, is what is measured. Without
# the recorded frames the bench says so and exits 0.
#
# It starts a private redis-server (TCP on a free loopback port, no
# persistence) and the relay in a temporary directory, then the reader
# alone (sluiced -c CONF --firehose, stream_trim = maxlen with
# stream_maxlen = 100000 so that Redis memory stays bounded), and times
# it from its start until the cursor it saves (GET cursor_key) reaches
# the last frame's seq (base + frames - 1, base read from the first entry
# of the stream). The cursor is saved with the next pipeline of XADDs, or
# alone within 0.2 s once the relay is quiet, so the time includes that
# last save.
#
# Reported: frames, wall seconds, frames/s; the reader's CPU seconds
# (utime + stime of /proc/PID/stat) and frames per CPU-second of the
# reader (what one core can take); the CPU seconds of the relay and of
# redis-server over the same time; the reader's peak RSS (VmHWM) and its
# anonymous RSS (RssAnon), read just before it is stopped with SIGTERM;
# the entries in the dead-letter stream (frames the reader could not
# decode: 0 expected). Prints a table and writes bench-firehose.txt (in
# the current directory, or $BENCH_OUT.txt). Not a test: nothing is
# asserted.
set -eu

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
N=${BENCH_FH_FRAMES:-300000}
DATA=${SLUICE_BLUESKY_DATA:-../shared/data/bluesky}
OUT=${BENCH_OUT:-bench-firehose}
BUILD=${SLUICE_BUILD:-build}
STREAM=firehose:events
CURSOR=firehose:bench-cursor
MAXLEN=100000
STALL_S=${BENCH_FH_STALL_SECONDS:-60} # no progress for this long: give up
HZ=$(getconf CLK_TCK)

say() { printf 'bench-firehose: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

if [ ! -f "$DATA/frames.bin.zst" ]; then
    say "no recorded frames ($DATA/frames.bin.zst): skipped"
    exit 0
fi
for b in sluiced sluice-relay; do
    [ -x "$BUILD/$b" ] || die "$BUILD/$b is missing: build first (make)"
done
command -v zstd >/dev/null || die "zstd is missing"
command -v redis-server >/dev/null || die "redis-server is missing"
BUILD=$(cd "$BUILD" && pwd)

tmp=$(mktemp -d /tmp/sluice-bench-fh.XXXXXX)
redis_pid=""
relay_pid=""
reader_pid=""
cleanup() {
    trap '' INT TERM
    set +e
    if [ -n "$reader_pid" ]; then
        kill -TERM "$reader_pid" 2>/dev/null
        wait "$reader_pid" 2>/dev/null
    fi
    [ -n "$relay_pid" ] && kill -TERM "$relay_pid" 2>/dev/null
    [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the capture ---------------------------------------------------------
zstd -qdc "$DATA/frames.bin.zst" >"$tmp/frames.bin" ||
    die "can't decompress $DATA/frames.bin.zst"
# [u32 little-endian length][frame] ...: count the records
size=$(wc -c <"$tmp/frames.bin")
off=0
per_loop=0
while [ "$off" -lt "$size" ]; do
    # shellcheck disable=SC2046 # four numbers, split on purpose
    set -- $(od -An -tu1 -j "$off" -N4 "$tmp/frames.bin")
    off=$((off + 4 + $1 + $2 * 256 + $3 * 65536 + $4 * 16777216))
    per_loop=$((per_loop + 1))
done
[ "$per_loop" -gt 0 ] || die "no frames in $DATA/frames.bin.zst"
LOOPS=$(((N + per_loop - 1) / per_loop))
[ "$LOOPS" -gt 0 ] || LOOPS=1
TOTAL=$((LOOPS * per_loop))

# ---- redis-server on a free loopback port ----------------------------------
# A port is tried until a redis-server of ours answers on it (one that is
# taken makes it exit at once).
rcli() { redis-cli -h 127.0.0.1 -p "$port" "$@"; }
port=""
i=0
while [ -z "$port" ] && [ "$i" -lt 20 ]; do
    i=$((i + 1))
    try=$(awk -v s="$$" -v i="$i" 'BEGIN { srand(s + i * 7919); print 20000 + int(rand() * 40000) }')
    redis-server --bind 127.0.0.1 --port "$try" --dir "$tmp" --save '' \
        --appendonly no --daemonize no >"$tmp/redis.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 100); do
        kill -0 "$redis_pid" 2>/dev/null || break
        if [ "$(redis-cli -h 127.0.0.1 -p "$try" info server 2>/dev/null |
            tr -d '\r' | sed -n 's/^process_id://p')" = "$redis_pid" ]; then
            port=$try
            break
        fi
        sleep 0.05
    done
    if [ -z "$port" ]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
        redis_pid=""
    fi
done
[ -n "$port" ] || die "redis-server did not start: $(tail -3 "$tmp/redis.log")"

# ---- the relay -------------------------------------------------------------
"$BUILD/sluice-relay" -n "$LOOPS" "$tmp/frames.bin" >"$tmp/relay.url" \
    2>"$tmp/relay.err" &
relay_pid=$!
for _ in $(seq 100); do
    [ -s "$tmp/relay.url" ] && break
    kill -0 "$relay_pid" 2>/dev/null || break
    sleep 0.05
done
relay_url=$(head -1 "$tmp/relay.url")
case "$relay_url" in
ws://*) ;;
*) die "sluice-relay did not start: $(cat "$tmp/relay.err")" ;;
esac

conf="$tmp/sluice.conf"
cat >"$conf" <<CONF
redis_url = redis://127.0.0.1:$port
relay_url = $relay_url
stream_key = $STREAM
cursor_key = $CURSOR
stream_trim = maxlen
stream_maxlen = $MAXLEN
log_level = info
log_target = $tmp/sluiced.log
CONF

# utime + stime of one process, in clock ticks
ticks() {
    if [ -r "/proc/$1/stat" ]; then
        sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
    else
        echo 0
    fi
}
# a field of /proc/PID/status in kB ("-" when not there)
status_kb() {
    awk -v k="$2:" '$1 == k { print $2; found = 1 } END { if (!found) print "-" }' \
        "/proc/$1/status" 2>/dev/null || echo -
}
now() { date +%s.%N; }

say "$TOTAL frames ($LOOPS loops of $per_loop), relay $relay_url, redis 127.0.0.1:$port"

# ---- the run ---------------------------------------------------------------
relay0=$(ticks "$relay_pid")
redis0=$(ticks "$redis_pid")
t0=$(now)
"$BUILD/sluiced" -c "$conf" --firehose >"$tmp/sluiced.out" 2>&1 &
reader_pid=$!

fail() {
    die "$* ($(tail -5 "$tmp/sluiced.log" "$tmp/sluiced.out" 2>/dev/null))"
}
# base: the seq of the stream's first entry, taken as soon as it is there
# (the trimming keeps the newest $MAXLEN entries only)
base=""
while [ -z "$base" ]; do
    kill -0 "$reader_pid" 2>/dev/null || fail "sluiced exited"
    base=$(rcli XRANGE "$STREAM" - + COUNT 1 2>/dev/null |
        awk 'prev == "seq" { print; exit } { prev = $0 }')
    [ -n "$base" ] || sleep 0.01
    [ "$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print (b - a > '"$STALL_S"') }')" = 0 ] ||
        fail "no entry after ${STALL_S}s"
done
last=$((base + TOTAL - 1))

cur=0
prev=0
stall_at=$(now)
while :; do
    kill -0 "$reader_pid" 2>/dev/null || fail "sluiced exited"
    cur=$(rcli GET "$CURSOR" 2>/dev/null || true)
    case "$cur" in '' | *[!0-9]*) cur=0 ;; esac
    [ "$cur" -ge "$last" ] && break
    t=$(now)
    if [ "$cur" != "$prev" ]; then
        prev=$cur
        stall_at=$t
    elif [ "$(awk -v a="$stall_at" -v b="$t" 'BEGIN { print (b - a > '"$STALL_S"') }')" = 1 ]; then
        fail "the cursor stayed at $cur (of $last) for ${STALL_S}s"
    fi
    sleep 0.05
done
t1=$(now)
reader_t=$(ticks "$reader_pid")
relay1=$(ticks "$relay_pid")
redis1=$(ticks "$redis_pid")
hwm=$(status_kb "$reader_pid" VmHWM)
anon=$(status_kb "$reader_pid" RssAnon)
kill -TERM "$reader_pid"
wait "$reader_pid" || true
reader_pid=""
dead=$(rcli XLEN "$STREAM:dead" 2>/dev/null || echo -)
xlen=$(rcli XLEN "$STREAM" 2>/dev/null || echo -)
redis_mem=$(rcli INFO memory 2>/dev/null | tr -d '\r' |
    sed -n 's/^used_memory_peak_human://p')

# ---- report ----------------------------------------------------------------
{
    echo "sluice bench-firehose: the reader (sluiced --firehose) taking" \
        "$TOTAL recorded frames from sluice-relay, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(nproc) CPUs, $(uname -r); stream_trim = maxlen," \
        "stream_maxlen = $MAXLEN; seq $base..$last"
    echo
    awk -v n="$TOTAL" -v t0="$t0" -v t1="$t1" -v hz="$HZ" -v rd="$reader_t" \
        -v rl="$((relay1 - relay0))" -v rs="$((redis1 - redis0))" \
        -v hwm="$hwm" -v anon="$anon" -v dead="$dead" 'BEGIN {
        s = t1 - t0; c = rd / hz;
        printf "%-34s %12d\n", "frames", n
        printf "%-34s %12.3f\n", "wall seconds", s
        printf "%-34s %12.0f\n", "frames/s (wall)", n / s
        printf "%-34s %12.2f\n", "reader CPU seconds", c
        printf "%-34s %12s\n", "reader frames/CPU-s (one core)",
            (c > 0 ? sprintf("%.0f", n / c) : "-")
        printf "%-34s %12s\n", "reader us/frame (CPU)",
            (c > 0 ? sprintf("%.1f", c * 1e6 / n) : "-")
        printf "%-34s %12.2f\n", "relay CPU seconds", rl / hz
        printf "%-34s %12.2f\n", "redis-server CPU seconds", rs / hz
        printf "%-34s %10s kB\n", "reader peak RSS (VmHWM)", hwm
        printf "%-34s %10s kB\n", "reader RssAnon", anon
        printf "%-34s %12s\n", "dead letters", dead
    }'
    echo "stream length at the end: $xlen; redis peak memory: $redis_mem"
} >"$OUT.txt"
cat "$OUT.txt"
say "figures written to $OUT.txt"
