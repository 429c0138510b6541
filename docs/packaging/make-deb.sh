#!/usr/bin/env bash
# Builds the Debian packages fieldsync_VERSION_ARCH.deb and fieldsim_VERSION_ARCH.deb (docs/packaging/README.md).
#
#   docs/packaging/make-deb.sh [OUT_DIR]        (from anywhere; OUT_DIR defaults to .build/deb)
#
# Needs: the Swift toolchain, dpkg-deb, gzip. Release binaries with the Swift runtime linked in
# statically (--static-swift-stdlib: a box needs no Swift toolchain), man pages generated from the
# argument parser (swift-argument-parser's generate-manual plugin), bash/zsh/fish completions from
# `--generate-completion-script`, the hardened systemd units of docs/systemd. The package's Depends
# are the Debian packages that own the shared libraries the binary links (dpkg -S on its ldd list):
# libsodium23, libsqlite3-0 and the C/C++ runtime. Set FIELDSYNC_DEB_BIN=DIR to package binaries
# already built (DIR holds fieldsync and fieldsim) instead of building them.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/.build/deb}
cd "$root"

if [ -n "${FIELDSYNC_DEB_BIN:-}" ]; then
  bin=$FIELDSYNC_DEB_BIN
else
  swift build -c release --static-swift-stdlib --product fieldsync
  swift build -c release --static-swift-stdlib --product fieldsim
  bin=$(swift build -c release --static-swift-stdlib --show-bin-path)
fi
version=$("$bin/fieldsync" --version | head -1 | cut -d' ' -f2)
arch=$(dpkg --print-architecture)

# Man pages: the plugin builds every product (in debug: the pages are the same, and a release build of
# the benchmarks and fuzzers would take long) and writes one page per command and subcommand.
man=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$man" "$work"' EXIT
swift package --allow-writing-to-directory "$root/.build" generate-manual --configuration debug --multi-page > "$man/plugin.log" 2>&1 \
  || { cat "$man/plugin.log"; exit 1; }
pages() { find "$root/.build/plugins" -path "*GenerateManual*" -name "$1*.1" -newer "$man" | sort; }

# Shared libraries -> the Debian packages that hold them.
depends() {
  ldd "$1" | awk '/=> \// { print $3 }' | while read -r lib; do
    dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib" 2>/dev/null || true
  done | cut -d: -f1 | sort -u | paste -sd, | sed 's/,/, /g'
}

# stage NAME DESCRIPTION: the common part of both packages (binary, man pages, completions, docs).
stage() {
  local name=$1 dir="$work/$1"
  install -d "$dir/DEBIAN" "$dir/usr/bin" "$dir/usr/share/man/man1" "$dir/usr/share/doc/$name" \
    "$dir/usr/share/bash-completion/completions" "$dir/usr/share/zsh/vendor-completions" "$dir/usr/share/fish/vendor_completions.d"
  install -m 0755 "$bin/$name" "$dir/usr/bin/$name"
  strip --strip-unneeded "$dir/usr/bin/$name" 2>/dev/null || true
  local n=0
  for page in $(pages "$name"); do
    case "$(basename "$page")" in fieldsync-bench*|fieldsync-fuzz*) [ "$name" = fieldsync ] && continue ;; esac
    gzip -9n < "$page" > "$dir/usr/share/man/man1/$(basename "$page").gz"
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || { echo "no man page generated for $name" >&2; cat "$man/plugin.log" >&2; exit 1; }
  "$bin/$name" --generate-completion-script bash > "$dir/usr/share/bash-completion/completions/$name"
  "$bin/$name" --generate-completion-script zsh > "$dir/usr/share/zsh/vendor-completions/_$name"
  "$bin/$name" --generate-completion-script fish > "$dir/usr/share/fish/vendor_completions.d/$name.fish"
  printf 'FieldSync %s\n\nBuilt from the FieldSync repository by docs/packaging/make-deb.sh.\n' "$version" > "$dir/usr/share/doc/$name/copyright"
}

control() {  # control NAME DESCRIPTION
  local dir="$work/$1"
  local size
  size=$(du -sk --exclude=DEBIAN "$dir" | cut -f1)
  cat > "$dir/DEBIAN/control" <<EOF
Package: $1
Version: $version
Architecture: $arch
Maintainer: FieldSync <fieldsync@localhost>
Installed-Size: $size
Depends: $(depends "$dir/usr/bin/$1")
Section: net
Priority: optional
Description: $2
EOF
}

# fieldsync: the node, its system user, /etc/fieldsync, /var/lib/fieldsync, the systemd units.
stage fieldsync
d="$work/fieldsync"
install -d "$d/lib/systemd/system"
for unit in fieldsync.service fieldsync-rotate.service fieldsync-rotate.timer; do
  sed 's|/usr/local/bin/fieldsync|/usr/bin/fieldsync|g' "docs/systemd/$unit" > "$d/lib/systemd/system/$unit"
  chmod 0644 "$d/lib/systemd/system/$unit"
done
install -m 0644 docs/relay-ops.md docs/hq-ops.md docs/node.md docs/enrollment.md docs/backup.md docs/cli.md "$d/usr/share/doc/fieldsync/"
cat > "$d/DEBIAN/postinst" <<'EOF'
#!/bin/sh
# The service user and its directories; the unit is installed but not enabled: it needs
# /etc/fieldsync/node.json first (docs/relay-ops.md, "3. Configure"), then `systemctl enable --now fieldsync`.
set -e
if [ "$1" = configure ]; then
  if ! getent passwd fieldsync > /dev/null; then
    adduser --system --group --home /var/lib/fieldsync --no-create-home --shell /usr/sbin/nologin fieldsync > /dev/null
  fi
  install -d -o root -g fieldsync -m 0750 /etc/fieldsync
  install -d -o fieldsync -g fieldsync -m 0700 /var/lib/fieldsync
  if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
fi
exit 0
EOF
cat > "$d/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && { [ "$1" = remove ] || [ "$1" = upgrade ]; }; then
  systemctl stop fieldsync.service fieldsync-rotate.timer > /dev/null 2>&1 || true
fi
exit 0
EOF
cat > "$d/DEBIAN/postrm" <<'EOF'
#!/bin/sh
# purge removes the node's state (store, keystore, seq guard) and config with the user: back up first
# (`fieldsync backup`, docs/backup.md).
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload > /dev/null 2>&1 || true; fi
if [ "$1" = purge ]; then
  rm -rf /var/lib/fieldsync /etc/fieldsync
  if getent passwd fieldsync > /dev/null; then deluser --system fieldsync > /dev/null 2>&1 || true; fi
  if getent group fieldsync > /dev/null; then delgroup --system fieldsync > /dev/null 2>&1 || true; fi
fi
exit 0
EOF
chmod 0755 "$d/DEBIAN/postinst" "$d/DEBIAN/prerm" "$d/DEBIAN/postrm"
control fieldsync "offline-first, encrypted, peer-to-peer sync node for field policing
 FieldSync's node daemon and command line: enrollment, serve, sync, records, backup and restore.
 The service runs as the fieldsync system user with its state in /var/lib/fieldsync and its
 configuration in /etc/fieldsync (docs in /usr/share/doc/fieldsync)."

# fieldsim: the simulator, on its own.
stage fieldsim
control fieldsim "deterministic network simulator of the FieldSync protocol
 fieldsim runs the real FieldSync protocol over simulated contacts (Longnan scenarios, faults,
 metrics) and compares it with baselines."

install -d "$out"
for p in fieldsync fieldsim; do
  dpkg-deb --root-owner-group --build "$work/$p" "$out/${p}_${version}_${arch}.deb" > /dev/null
  echo "$out/${p}_${version}_${arch}.deb"
done
