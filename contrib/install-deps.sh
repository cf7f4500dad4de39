#!/bin/sh
# install-deps.sh: make sure every Debian 12 package that sluice needs to
# build, test and run is installed. Idempotent and silent when nothing is
# missing; installs what is missing when run as root; otherwise prints the
# one command to run and exits 1.
set -eu

PACKAGES="build-essential pkg-config libhiredis-dev libpq-dev libbsd-dev
libcjson-dev redis-server redis-tools postgresql-15 postgresql-client-15
perl procps util-linux runit libwebsockets-dev libssl-dev zstd openssl socat
ca-certificates debhelper dpkg-dev fakeroot lintian man-db groff-base
adduser faketime s6"

missing=""
for p in $PACKAGES; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = "installed" ] || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "sluice: missing Debian packages:$missing" >&2
    echo "sluice: run as root: apt-get install -y$missing" >&2
    exit 1
fi

echo "sluice: installing missing packages:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# A fresh machine has no package lists yet; refresh them once, quietly.
apt-get update -qq >/dev/null
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
