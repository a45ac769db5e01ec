#!/usr/bin/env bash
# Builds the test guest into OUTDIR: Debian's kernel (vmlinuz, from the
# linux-image package apt resolves for linux-image-amd64) and an initramfs
# with busybox-static, /init and memload. Idempotent: a rebuild happens only
# when an input changed. Needs apt access and root (apt-get download).
set -euo pipefail
out="${1:?usage: build-guest.sh OUTDIR}"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cache="${MM_CACHE:-$out/cache}"
mkdir -p "$cache"

# --- kernel -------------------------------------------------------------
if [ ! -s "$out/vmlinuz" ]; then
  pkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
  if [ -z "$pkg" ]; then
    apt-get update -q >/dev/null
    pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
  fi
  [ -n "$pkg" ] || { echo "build-guest: apt knows no linux-image-amd64 kernel package" >&2; exit 1; }
  deb="$(ls "$cache"/"$pkg"_*.deb 2>/dev/null | head -1 || true)"
  if [ -z "$deb" ]; then
    (cd "$cache" && apt-get download -q "$pkg" >/dev/null 2>&1) || {
      echo "build-guest: apt-get download $pkg failed" >&2; exit 1; }
    deb="$(ls "$cache"/"$pkg"_*.deb | head -1)"
  fi
  rm -rf "$cache/kernel"
  mkdir -p "$cache/kernel"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$cache/kernel" --wildcards './boot/vmlinuz-*'
  cp "$cache"/kernel/boot/vmlinuz-* "$out/vmlinuz.tmp"
  mv "$out/vmlinuz.tmp" "$out/vmlinuz"
  rm -rf "$cache/kernel"
  echo "build-guest: kernel from $pkg"
fi

# --- initramfs ------------------------------------------------------------
stamp_inputs=("$here/memload.c" "$here/init" "$here/build-guest.sh" /bin/busybox)
if [ -s "$out/initramfs.cpio.gz" ]; then
  fresh=1
  for f in "${stamp_inputs[@]}"; do
    [ "$f" -nt "$out/initramfs.cpio.gz" ] && fresh=0
  done
  [ "$fresh" = 1 ] && exit 0
fi
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || {
  echo "build-guest: /bin/busybox (busybox-static) is missing" >&2; exit 1; }
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,proc,sys,dev,tmp,root}
cp /bin/busybox "$stage/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$stage/bin/$applet"
done
gcc -O2 -static -Wall -Werror -o "$stage/bin/memload" "$here/memload.c"
install -m 0755 "$here/init" "$stage/init"
(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$out/initramfs.cpio.gz.tmp"
mv "$out/initramfs.cpio.gz.tmp" "$out/initramfs.cpio.gz"
echo "build-guest: initramfs $(du -h "$out/initramfs.cpio.gz" | cut -f1)"
