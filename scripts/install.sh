#!/usr/bin/env bash
# Installs libxrdma for C users: the shared and static libraries in PREFIX/lib, the
# headers in PREFIX/include/xrdma, and xrdma.pc in PREFIX/lib/pkgconfig, so that
#   cc prog.c $(pkg-config --cflags --libs xrdma)
# builds a program against it (PKG_CONFIG_PATH=PREFIX/lib/pkgconfig for a prefix
# pkg-config does not search); and the `xrdma` command in PREFIX/bin with the preload
# library beside it in PREFIX/lib, so that `xrdma run -- PROGRAM` works.
#
# Usage: scripts/install.sh [--prefix DIR] [--debug]
#   --prefix DIR  where to install (default /usr/local)
#   --debug       install the dev-profile build `cargo build` made, instead of building
#                 and installing the release one
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
profile=release
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --debug) profile=debug; shift ;;
        *) echo "usage: $0 [--prefix DIR] [--debug]" >&2; exit 2 ;;
    esac
done
case "$prefix" in /*) ;; *) prefix=$PWD/$prefix ;; esac

if [ "$profile" = release ]; then
    cargo build --release --locked -p xrdma-cabi -p xrdma-preload
    # Apart: `--bin` would narrow the libraries' build to no target at all.
    cargo build --release --locked -p xrdma --bin xrdma
fi
target=$(cargo metadata --format-version 1 --no-deps | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')
built=$target/$profile
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
install -d "$prefix/lib/pkgconfig" "$prefix/include/xrdma" "$prefix/bin"
install -m 0755 "$built/libxrdma.so" "$built/libxrdma_preload.so" "$prefix/lib/"
install -m 0755 "$built/xrdma" "$prefix/bin/"
install -m 0644 "$built/libxrdma.a" "$prefix/lib/"
install -m 0644 include/xrdma/*.h "$prefix/include/xrdma/"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" \
    cabi/xrdma.pc.in > "$prefix/lib/pkgconfig/xrdma.pc"
echo "installed libxrdma $version in $prefix"
