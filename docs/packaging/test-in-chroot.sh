#!/usr/bin/env bash
# Installs the Debian packages into a clean Debian bookworm chroot and checks them (docs/packaging/README.md,
# "Test in a clean Debian"): the fieldsync user, the modes of /etc/fieldsync and /var/lib/fieldsync, that
# `fieldsync --version` runs with only what apt pulled in (Depends), the systemd units, a station node
# started as its unit starts it and synced with a backpack, `remove` keeping the state and `purge` removing it.
#
#   docs/packaging/test-in-chroot.sh [DEB_DIR]     (as root; DEB_DIR holds fieldsync_*.deb and fieldsim_*.deb,
#                                                  default .build/deb, made by docs/packaging/make-deb.sh)
#
# The clean system is `debootstrap --variant=minbase bookworm` from deb.debian.org (FIELDSYNC_DEBIAN_MIRROR),
# made once and kept in FIELDSYNC_CHROOT_CACHE (default /var/tmp/fieldsync-chroot/base); each run installs into
# a fresh copy of it, removed at the end. apt inside the chroot needs the mirror too. systemd cannot run as PID 1
# in a chroot: the unit file is checked as a file, and the node is started as the unit starts it (its user,
# group and UMask=0077), not by systemctl.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
debs=$(cd "${1:-$root/.build/deb}" && pwd)
cache=${FIELDSYNC_CHROOT_CACHE:-/var/tmp/fieldsync-chroot/base}
mirror=${FIELDSYNC_DEBIAN_MIRROR:-http://deb.debian.org/debian}
[ "$(id -u)" = 0 ] || { echo "test-in-chroot.sh: needs root (debootstrap, chroot, mount)" >&2; exit 2; }
ls "$debs"/fieldsync_*.deb "$debs"/fieldsim_*.deb > /dev/null

if [ ! -x "$cache/bin/sh" ]; then
  command -v debootstrap > /dev/null || { echo "test-in-chroot.sh: needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }
  rm -rf "$cache.tmp"
  debootstrap --variant=minbase bookworm "$cache.tmp" "$mirror"
  mv "$cache.tmp" "$cache"
fi

c=$(mktemp -d "${cache%/*}/run.XXXXXX")
cleanup() {
  [ -n "${serve_pid:-}" ] && kill "$serve_pid" 2> /dev/null || true
  umount "$c/proc" 2> /dev/null || true
  rm -rf "$c"
}
trap cleanup EXIT
cp -a "$cache/." "$c/"
mount -t proc proc "$c/proc"
cp /etc/resolv.conf "$c/etc/resolv.conf"
mkdir -p "$c/tmp/debs" && cp "$debs"/fieldsync_*.deb "$debs"/fieldsim_*.deb "$c/tmp/debs/"
inside() { chroot "$c" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
fails=0
check() {  # check DESCRIPTION COMMAND...: prints ok/FAIL and counts failures
  local what=$1; shift
  if "$@"; then echo "ok    $what"; else echo "FAIL  $what"; fails=$((fails + 1)); fi
}
same() { [ "$1" = "$2" ] || { echo "      got '$1', want '$2'" >&2; return 1; }; }

echo "== clean bookworm ($(inside cat /etc/debian_version)); before the install:"
for p in libsodium23 libsqlite3-0 adduser; do
  echo "   $p: $(inside dpkg-query -W -f='${Status}' "$p" 2> /dev/null || echo not installed)"
done
inside apt-get update -qq
debfiles=$(cd "$c" && ls tmp/debs/fieldsync_*.deb tmp/debs/fieldsim_*.deb | sed 's|^|/|')  # the chroot's paths
# shellcheck disable=SC2086
inside env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $debfiles

echo "== installed"
check "Depends pulled in libsodium23 and libsqlite3-0" inside dpkg-query -W libsodium23 libsqlite3-0
check "fieldsync --version runs" inside /usr/bin/fieldsync --version
inside /usr/bin/fieldsync --version | sed 's/^/      /'
check "no shared library missing" sh -c "! chroot '$c' ldd /usr/bin/fieldsync | grep -q 'not found'"
check "fieldsim runs" sh -c "chroot '$c' /usr/bin/fieldsim --help > /dev/null"
check "fieldsync is a system user, no login, home /var/lib/fieldsync" \
  sh -c "chroot '$c' getent passwd fieldsync | awk -F: '\$3 < 1000 && \$6 == \"/var/lib/fieldsync\" && \$7 ~ /nologin\$/ { ok = 1 } END { exit !ok }'"
check "/etc/fieldsync root:fieldsync 0750" same "$(inside stat -c '%U:%G %a' /etc/fieldsync)" "root:fieldsync 750"
check "/var/lib/fieldsync fieldsync:fieldsync 0700" same "$(inside stat -c '%U:%G %a' /var/lib/fieldsync)" "fieldsync:fieldsync 700"
unit=$c/lib/systemd/system/fieldsync.service
check "unit installed, hardened, runs /usr/bin/fieldsync" sh -c "grep -q '^ExecStart=/usr/bin/fieldsync serve --config /etc/fieldsync/node.json' '$unit' \
  && grep -q '^ProtectSystem=strict' '$unit' && grep -q '^NoNewPrivileges=yes' '$unit' && grep -q '^UMask=0077' '$unit' \
  && [ -f '$c/lib/systemd/system/fieldsync-rotate.timer' ]"
check "man pages and completions" sh -c "ls '$c'/usr/share/man/man1/fieldsync.1.gz '$c'/usr/share/bash-completion/completions/fieldsync > /dev/null"
echo "      (the unit is not started by systemctl: systemd cannot run as PID 1 in a chroot)"

echo "== a station node as the unit runs it, and a backpack syncing with it"
scope=longnan/wudu/station-017
port=$((20000 + RANDOM % 20000))
inside sh -ec "
  cd /tmp
  fieldsync authority init --dir hq --key-file hq.key
  fieldsync device init --dir st --key-file st.key --role station --scope $scope --label st
  fieldsync device init --dir bp --key-file bp.key --role backpack --scope $scope --label bp
  fieldsync authority enroll st/enrollment.req --dir hq --key-file hq.key --role station --scope $scope --out st.cert
  fieldsync authority enroll bp/enrollment.req --dir hq --key-file hq.key --role backpack --scope $scope --out bp.cert
  fieldsync device import st.cert --dir st --key-file st.key --root hq/root.pub
  fieldsync device import bp.cert --dir bp --key-file bp.key --root hq/root.pub
  fieldsync epoch-key new --scope $scope --out s.epochkey
  cp -r st /var/lib/fieldsync/device && cp st.key /var/lib/fieldsync/device/device.key && cp s.epochkey /var/lib/fieldsync/station.epochkey
  chown -R fieldsync:fieldsync /var/lib/fieldsync && chmod 600 /var/lib/fieldsync/station.epochkey /var/lib/fieldsync/device/device.key
  printf '%s' '{\"device\": {\"dir\": \"/var/lib/fieldsync/device\", \"keyFile\": \"/var/lib/fieldsync/device/device.key\"},
    \"epochKeyFiles\": [\"/var/lib/fieldsync/station.epochkey\"], \"store\": {\"path\": \"/var/lib/fieldsync/store.sqlite\"},
    \"listen\": \"127.0.0.1:$port\", \"metrics\": {\"enabled\": false}, \"discovery\": {\"enabled\": false}}' > /etc/fieldsync/node.json
  chgrp fieldsync /etc/fieldsync/node.json && chmod 640 /etc/fieldsync/node.json
  fieldsync incident new --dir bp --key-file bp.key --store bp.sqlite --epoch-key-file s.epochkey --scope $scope \
    --category dispute --summary 'to the node in the chroot' --lat 33.4 --lon 104.9 > /dev/null
" > "$c/tmp/setup.log" 2>&1 || { cat "$c/tmp/setup.log"; exit 1; }
check "config check as the fieldsync user" sh -c "chroot '$c' setpriv --reuid fieldsync --regid fieldsync --init-groups \
  /usr/bin/fieldsync config check /etc/fieldsync/node.json > /dev/null"
chroot "$c" /bin/sh -c "umask 077 && exec setpriv --reuid fieldsync --regid fieldsync --init-groups \
  /usr/bin/fieldsync serve --config /etc/fieldsync/node.json" > "$c/tmp/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do grep -q serving "$c/tmp/serve.log" && break; sleep 0.2; done
check "the node serves as fieldsync" grep -q serving "$c/tmp/serve.log"
check "a backpack syncs a record to it" sh -c "chroot '$c' sh -c 'cd /tmp && fieldsync sync 127.0.0.1:$port --dir bp --key-file bp.key \
  --store bp.sqlite --epoch-key-file s.epochkey --json' | grep -q '\"changesAcknowledged\" *: *1\b'"
kill "$serve_pid"; wait "$serve_pid" && serve_status=0 || serve_status=$?
serve_pid=
check "the node stops on SIGTERM with 0" same "$serve_status" 0
check "the store is fieldsync's, 0600" same "$(inside stat -c '%U:%G %a' /var/lib/fieldsync/store.sqlite)" "fieldsync:fieldsync 600"
check "the record is in the node's store" sh -c "chroot '$c' setpriv --reuid fieldsync --regid fieldsync --init-groups /usr/bin/fieldsync list \
  --dir /var/lib/fieldsync/device --key-file /var/lib/fieldsync/device/device.key --store /var/lib/fieldsync/store.sqlite \
  --epoch-key-file /var/lib/fieldsync/station.epochkey | grep -q 'to the node in the chroot'"

echo "== remove keeps the state and config; purge removes them"
inside env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q fieldsync fieldsim > /dev/null
check "remove: binaries gone" sh -c "[ ! -e '$c/usr/bin/fieldsync' ] && [ ! -e '$c/usr/bin/fieldsim' ]"
check "remove: store, device and config kept, user kept" sh -c "[ -f '$c/var/lib/fieldsync/store.sqlite' ] && [ -f '$c/etc/fieldsync/node.json' ] \
  && chroot '$c' getent passwd fieldsync > /dev/null"
inside dpkg --purge fieldsync fieldsim > /dev/null  # dpkg: apt knows a removed local .deb no more
check "purge: /etc/fieldsync, /var/lib/fieldsync and the units gone" sh -c "[ ! -e '$c/etc/fieldsync' ] && [ ! -e '$c/var/lib/fieldsync' ] \
  && [ ! -e '$c/lib/systemd/system/fieldsync.service' ]"
check "purge: fieldsync user and group gone" sh -c "! chroot '$c' getent passwd fieldsync && ! chroot '$c' getent group fieldsync"

echo "== $fails failure(s)"
[ "$fails" = 0 ]
