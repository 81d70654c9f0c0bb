#!/usr/bin/env bash
# Installs what building and testing xrdma needs on Debian 12, then builds.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build: xsk-rs builds libxdp and libbpf (clang, libelf, m4, libpcap, zlib, pkg-config).
# Test hosts: iproute2 (ip netns, veth), nftables (random loss), iputils-ping.
# Tests and benchmarks: tshark (decodes our frames), sockperf and iperf3 (kernel baselines).
# libxrdma.so: libibverbs-dev (its header gives the ABI's struct layouts, through bindgen);
# ibverbs-utils (ibv_devinfo, ibv_ud_pingpong: the unmodified programs the tests run on it).
packages=(clang libelf-dev m4 libpcap-dev pkg-config zlib1g-dev make gcc g++ valgrind
          iproute2 nftables iputils-ping tshark sockperf iperf3 redis-server redis-tools
          libibverbs-dev ibverbs-utils librdmacm-dev rdmacm-utils perftest)
# Soft-RoCE peer (testnet's RxePeer, tests/rxe_interop.rs): QEMU boots Debian's 6.1 kernel
# with rdma_rxe over this machine's root filesystem, so the guest runs this rdma-core.
packages+=(qemu-system-x86 linux-image-amd64 rdma-core ibverbs-providers busybox-static kmod)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: install them as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found. xrdma needs Rust 1.87 or newer (Debian 12's rustc is older):" >&2
  echo "setup: install it with rustup (https://rustup.rs), then run this again." >&2
  exit 1
fi
