#!/bin/sh
# run.sh: `make run`, sluice on a live stream of generated events.
#
# Without REDIS_URL / DATABASE_URL in the environment it starts a private
# redis-server and PostgreSQL cluster under ./state (Unix sockets only, no
# TCP port; PostgreSQL runs as `nobody` when this runs as root), applies the
# schema (sluiced --init-schema), starts sluiced in the foreground with the
# sample configuration (etc/sluice.conf) and feeds it with sluice-gen at a
# live rate (RATE, default 2000 events/s, the real firehose's). With
# REDIS_URL and/or DATABASE_URL set, those servers are used and none is
# started for them.
#
# Ctrl-C stops everything in order: the generator, sluiced (which finishes
# its batches), then the private servers. The data stays in ./state; the
# next `make run` goes on with it (rm -rf state to start over).
#
# Environment: RATE (events/s), SINK (atproto, or raw), SLUICE_BUILD
# (build), SLUICE_STATE (./state), PARALLEL_CONSUMERS and the other
# settings of sluice.conf.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD=${SLUICE_BUILD:-build}
STATE=${SLUICE_STATE:-$ROOT/state}
RATE=${RATE:-2000}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
CONF=etc/sluice.conf

say() { printf 'run: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

for b in sluiced sluicectl sluice-gen; do
    [ -x "$BUILD/$b" ] || die "$BUILD/$b is missing: build first (make)"
done
sink_default=0
[ -n "${SINK:-}" ] || sink_default=1
SINK=${SINK:-atproto}
set --
[ -f "$CONF" ] && set -- -c "$CONF"

mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
redis_pid=""
pg_home=""
sluiced_pid=""
gen_pid=""
as_pg=""
[ "$(id -u)" = 0 ] && as_pg="runuser -u nobody --"

stop_all() {
    trap '' INT TERM
    if [ -n "$gen_pid" ]; then
        kill -TERM "$gen_pid" 2>/dev/null || true
        wait "$gen_pid" 2>/dev/null || true
        gen_pid=""
    fi
    if [ -n "$sluiced_pid" ]; then
        # a graceful stop: the workers finish their batch, commit and ack
        kill -TERM "$sluiced_pid" 2>/dev/null || true
        wait "$sluiced_pid" 2>/dev/null || true
        sluiced_pid=""
    fi
    if [ -n "$redis_pid" ]; then
        redis-cli -s "$STATE/redis/redis.sock" shutdown save >/dev/null 2>&1 ||
            kill -TERM "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
        redis_pid=""
    fi
    if [ -n "$pg_home" ]; then
        $as_pg "$PGBIN/pg_ctl" -D "$pg_home/data" -m fast -w stop \
            >/dev/null 2>&1 || true
        pg_home=""
    fi
}

finish() {
    rc=$?
    stop_all
    if [ "${started_servers:-0}" = 1 ]; then
        say "stopped. The data is in $STATE (PostgreSQL cluster in" \
            "$STATE/pg, Redis in $STATE/redis); make run goes on with it," \
            "rm -rf $STATE starts over."
    else
        say "stopped."
    fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 0' INT TERM

# ---- the private servers -------------------------------------------------
started_servers=0
if [ -z "${REDIS_URL:-}" ]; then
    mkdir -p "$STATE/redis"
    rm -f "$STATE/redis/redis.sock"
    # its own session: Ctrl-C must not stop it before sluiced is done
    setsid redis-server --port 0 --unixsocket "$STATE/redis/redis.sock" \
        --unixsocketperm 700 --dir "$STATE/redis" --save 300 1 \
        --appendonly no --daemonize no --logfile "$STATE/redis/redis.log" &
    redis_pid=$!
    i=0
    until redis-cli -s "$STATE/redis/redis.sock" ping >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -lt 100 ] || die "redis-server did not start: see $STATE/redis/redis.log"
        sleep 0.1
    done
    REDIS_URL="unix://$STATE/redis/redis.sock"
    started_servers=1
    say "private Redis: $REDIS_URL"
fi

if [ -z "${DATABASE_URL:-}" ]; then
    pg_home="$STATE/pg"
    mkdir -p "$pg_home"
    if [ -n "$as_pg" ]; then
        chown nobody "$pg_home"
        # nobody must reach the directory; under /root it can't: keep the
        # cluster in /var/tmp then, with state/pg pointing at it
        if ! $as_pg test -w "$pg_home"; then
            alt="/var/tmp/sluice-pg-$(printf '%s' "$STATE" | cksum | cut -d' ' -f1)"
            mkdir -p "$alt"
            chown nobody "$alt"
            rmdir "$pg_home" 2>/dev/null || true
            [ -L "$pg_home" ] || ln -s "$alt" "$pg_home"
            pg_home=$alt
            say "PostgreSQL cannot run as nobody under $STATE: its cluster is in $alt"
        fi
    fi
    if [ ! -f "$pg_home/data/PG_VERSION" ]; then
        say "creating a PostgreSQL cluster in $pg_home/data"
        $as_pg mkdir -p "$pg_home/data" "$pg_home/sock"
        chmod 700 "$pg_home/data"
        $as_pg "$PGBIN/initdb" -D "$pg_home/data" -U sluice --auth=trust \
            -E UTF8 --locale=C >"$pg_home/initdb.log" 2>&1 ||
            die "initdb failed: see $pg_home/initdb.log"
    fi
    $as_pg mkdir -p "$pg_home/sock"
    # pg_ctl detaches the postmaster into its own session: Ctrl-C here
    # does not reach it
    $as_pg "$PGBIN/pg_ctl" -D "$pg_home/data" -w -t 60 \
        -l "$pg_home/postgres.log" \
        -o "-k $pg_home/sock -c listen_addresses=''" start >/dev/null ||
        { pg_home=""; die "PostgreSQL did not start: see $STATE/pg/postgres.log"; }
    "$PGBIN/psql" -X -q -h "$pg_home/sock" -U sluice -d postgres -tAc \
        "select 1 from pg_database where datname = 'sluice'" | grep -q 1 ||
        "$PGBIN/createdb" -h "$pg_home/sock" -U sluice sluice
    DATABASE_URL="postgresql:///sluice?host=$pg_home/sock&user=sluice"
    started_servers=1
    say "private PostgreSQL: $DATABASE_URL"
fi
export REDIS_URL DATABASE_URL

# ---- schema, sluiced, the generator ----------------------------------------
if ! "$BUILD/sluiced" "$@" -s "sink=$SINK" --init-schema; then
    # a build without the atproto sink yet: the raw sink still shows the
    # machinery at work
    [ "$sink_default" = 1 ] || die "sluiced --init-schema failed"
    say "no working atproto sink in this build: using the raw sink"
    SINK=raw
    "$BUILD/sluiced" "$@" -s "sink=$SINK" --init-schema ||
        die "sluiced --init-schema failed"
fi
set -- "$@" -s "sink=$SINK"

"$BUILD/sluiced" "$@" &
sluiced_pid=$!
sleep 1
kill -0 "$sluiced_pid" 2>/dev/null || die "sluiced did not start (see above)"

"$BUILD/sluice-gen" -n 0 --rate "$RATE" -s "$(date +%s)" -q &
gen_pid=$!

ctl="$BUILD/sluicectl"
[ -f "$CONF" ] && ctl="$ctl -c $CONF"
ctl="$ctl -s redis_url=$REDIS_URL top"
say "sluiced runs (sink $SINK), fed with $RATE generated events/s."
say "watch it live in another terminal:  cd $ROOT && $ctl"
say "Ctrl-C stops everything."

# sluiced stays in the foreground: its events/sec lines appear below
wait "$sluiced_pid" || true
sluiced_pid=""
say "sluiced exited"
