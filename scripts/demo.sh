#!/usr/bin/env bash
# The demo: xrdma's raw frame path and UD verbs between two hosts, next to the kernel's UDP;
# as root also rdma-core's unmodified ibv_rc_pingpong over libxrdma.so, next to kernel TCP.
#   as root:  two network namespaces joined by a veth pair, xdp backend (AF_XDP);
#   otherwise: two endpoints on loopback (127.0.0.1 and 127.0.0.2), udp backend.
# Options are passed to every `xrdma perf` client, e.g. `scripts/demo.sh --duration 5`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p xrdma -p xrdma-cabi
X=$PWD/target/release/xrdma
LIB=$PWD/target/release/libxrdma.so
extra=("$@")

sockperf_p50() { # sockperf ping-pong output -> one-way p50 latency in microseconds
  awk '/percentile 50.000 =/ { print $NF }'
}

if [ "$(id -u)" -eq 0 ]; then
  A=xrdemo-$$-a B=xrdemo-$$-b
  cleanup() {
    ip netns pids "$A" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns pids "$B" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
  }
  trap cleanup EXIT
  ip netns add "$A"
  ip netns add "$B"
  ip -n "$A" link add xrdemo0 type veth peer name xrdemo1 netns "$B"
  ip -n "$A" addr add 198.18.0.1/24 dev xrdemo0
  ip -n "$B" addr add 198.18.0.2/24 dev xrdemo1
  for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
  ip -n "$A" link set xrdemo0 up
  ip -n "$B" link set xrdemo1 up
  ip netns exec "$B" ping -c 3 -i 0.2 -W 1 -q 198.18.0.1 >/dev/null
  echo "== two hosts (network namespaces $A, $B), veth, xdp backend"
  ip netns exec "$A" "$X" devinfo --iface xrdemo0 --backend xdp
  serve() { ip netns exec "$A" "$X" perf "$1" --server --iface xrdemo0 --backend xdp >/dev/null & }
  client() { ip netns exec "$B" "$X" perf "$1" --connect 198.18.0.1 --iface xrdemo1 --backend xdp "${extra[@]}" --json; }
  kernel() { # extra sockperf options, e.g. to spin, as both server and client options
    ip netns exec "$A" sockperf server -i 198.18.0.1 -p 11111 "$@" >/dev/null 2>&1 &
    local pid=$!
    sleep 0.5
    ip netns exec "$B" sockperf ping-pong -i 198.18.0.1 -p 11111 -m 64 -t 3 "$@" 2>&1
    kill "$pid"
  }
  rc_pingpong() { # ibv_rc_pingpong options -> the client's "... usec/iter" line
    ip netns exec "$A" env LD_PRELOAD="$LIB" XRDMA_IFACE=xrdemo0 \
      ibv_rc_pingpong -g 0 -n 2000 "$@" >/dev/null &
    local pid=$!
    sleep 0.5
    ip netns exec "$B" env LD_PRELOAD="$LIB" XRDMA_IFACE=xrdemo1 \
      ibv_rc_pingpong -g 0 -n 2000 "$@" 198.18.0.1 | grep 'usec/iter'
    wait "$pid"
  }
  tcp_rtt() { # message size, extra sockperf options -> kernel TCP round trip (2 x avg), us
    local size=$1
    shift
    ip netns exec "$A" sockperf server --tcp -i 198.18.0.1 -p 11112 "$@" >/dev/null 2>&1 &
    local pid=$!
    sleep 0.5
    ip netns exec "$B" sockperf ping-pong --tcp -i 198.18.0.1 -p 11112 -m "$size" -t 3 "$@" 2>&1 |
      awk '/avg-latency=/ { sub(/.*avg-latency=/, ""); print 2 * $1 }'
    kill "$pid"
  }
else
  echo "== not root: two endpoints on loopback (127.0.0.1, 127.0.0.2), udp backend"
  "$X" devinfo --iface lo --backend udp --addr 127.0.0.1
  serve() { "$X" perf "$1" --server --iface lo --backend udp --addr 127.0.0.1 >/dev/null & }
  client() { "$X" perf "$1" --connect 127.0.0.1 --iface lo --backend udp --addr 127.0.0.2 "${extra[@]}" --json; }
  kernel() {
    sockperf server -i 127.0.0.1 -p 11111 "$@" >/dev/null 2>&1 &
    local pid=$!
    sleep 0.5
    sockperf ping-pong -i 127.0.0.1 -p 11111 -m 64 -t 3 "$@" 2>&1
    kill "$pid"
  }
fi

for test in raw-lat raw-bw ud-lat ud-bw; do
  echo "== xrdma perf $test"
  serve "$test"
  out=$(client "$test")
  wait
  echo "$out" | head -n -1
  echo "$out" | tail -n 1 > "/tmp/xrdma-demo-$test.json"
done
# sockperf twice: as it runs by default (blocking in epoll, so each message may wake an idle
# CPU, which costs tens of microseconds on a VM) and spinning like xrdma's tests do.
for mode in default spinning; do
  if [ "$mode" = default ]; then opts=(); else opts=(--nonblocked --timeout 0); fi
  echo "== kernel UDP ping-pong (sockperf, 64 B, $mode) on the same link"
  k50=$(kernel "${opts[@]}" | tee "/tmp/xrdma-demo-sockperf-$mode.txt" | sockperf_p50)
  grep -E 'avg-latency|percentile 50.000|percentile 99.000' "/tmp/xrdma-demo-sockperf-$mode.txt" || true
  for test in raw-lat ud-lat; do
    x50=$(sed -n 's/.*"lat_us_p50":\([0-9.]*\).*/\1/p' "/tmp/xrdma-demo-$test.json")
    if [ -n "$k50" ] && [ -n "$x50" ]; then
      awk -v t="$test" -v x="$x50" -v k="$k50" -v m="$mode" 'BEGIN { printf "%s p50 %.2f us vs kernel UDP (%s) p50 %.2f us: ratio %.2f\n", t, x, m, k, x / k }'
    fi
  done
done

if [ "$(id -u)" -eq 0 ]; then
  # rdma-core's own ibv_rc_pingpong, unmodified, over libxrdma.so: RC SENDs both ways. Polling
  # is compared with sockperf's TCP ping-pong spinning, completion events (-e) with sockperf
  # blocking as it does by default. sockperf reports one-way latency; a round trip is twice it.
  for size in 4096 65536; do
    for mode in polling events; do
      if [ "$mode" = polling ]; then rc=(); tcp=(--nonblocked --timeout 0); else rc=(-e); tcp=(); fi
      echo "== ibv_rc_pingpong -s $size ($mode) over xrdma vs kernel TCP ping-pong"
      line=$(rc_pingpong -s "$size" "${rc[@]}")
      echo "$line"
      # sockperf's TCP messages are at most 65,000 bytes.
      k=$(tcp_rtt "$((size > 65000 ? 65000 : size))" "${tcp[@]}")
      x=$(echo "$line" | awk '{ print $(NF - 1) }')
      if [ -n "$k" ] && [ -n "$x" ]; then
        awk -v s="$size" -v x="$x" -v k="$k" -v m="$mode" 'BEGIN { printf "rc_pingpong %d B %.1f us/iter vs kernel TCP round trip (%s) %.1f us: ratio %.2f\n", s, x, m, k, x / k }'
      fi
    done
  done
else
  echo "== ibv_rc_pingpong over libxrdma.so: skipped, it needs two hosts (run as root)"
fi
