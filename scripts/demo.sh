#!/usr/bin/env bash
# The demo: xrdma between two hosts next to the kernel on the same link, measured in the same
# run: raw frames and UD against kernel UDP; RC latency, message rate and RDMA WRITE
# bandwidth against kernel TCP (as root, bandwidth over both backends); connections per second through the connection manager; as
# root also rdma-core's unmodified ibv_rc_pingpong over libxrdma.so against kernel TCP, and
# its rdma_cm programs rping and cmtime.
#   as root:  two network namespaces joined by a veth pair with jumbo frames (MTU 9000, as
#             RoCE's path MTU 4096 needs), xdp backend (AF_XDP);
#   otherwise: two endpoints on loopback (127.0.0.1 and 127.0.0.2), udp backend.
# Options are passed to every `xrdma perf` client, e.g. `scripts/demo.sh --duration 5`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p xrdma -p xrdma-cabi
X=$PWD/target/release/xrdma
LIB=$PWD/target/release/libxrdma.so
extra=("$@")
OUT=$(mktemp -d /tmp/xrdma-demo.XXXXXX)

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
  ip -n "$A" link set xrdemo0 mtu 9000
  ip -n "$B" link set xrdemo1 mtu 9000
  ip -n "$A" addr add 198.18.0.1/24 dev xrdemo0
  ip -n "$B" addr add 198.18.0.2/24 dev xrdemo1
  for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
  ip -n "$A" link set xrdemo0 up
  ip -n "$B" link set xrdemo1 up
  ip netns exec "$B" ping -c 3 -i 0.2 -W 1 -q 198.18.0.1 >/dev/null
  echo "== two hosts (network namespaces $A, $B), veth with MTU 9000, xdp backend"
  at_a=(ip netns exec "$A") at_b=(ip netns exec "$B")
  SERVER=198.18.0.1
  xa=(--iface xrdemo0 --backend xdp) xb=(--iface xrdemo1 --backend xdp)
else
  echo "== not root: two endpoints on loopback (127.0.0.1, 127.0.0.2), udp backend"
  at_a=(env) at_b=(env)
  SERVER=127.0.0.1
  xa=(--iface lo --backend udp --addr 127.0.0.1) xb=(--iface lo --backend udp --addr 127.0.0.2)
fi
"${at_a[@]}" "$X" devinfo "${xa[@]}"

server_opts=() # options of the server's side too (the socket tests' --polling-time)
xrdma() { # test, extra client options -> the client's human line; its JSON goes to $OUT/test
  local test=$1
  shift
  "${at_a[@]}" "$X" perf "$test" --server "${xa[@]}" "${server_opts[@]}" >/dev/null &
  local out
  out=$("${at_b[@]}" "$X" perf "$test" --connect "$SERVER" "${xb[@]}" "$@" "${extra[@]}" --json)
  wait
  echo "$out" | head -n -1
  echo "$out" | tail -n 1 > "$OUT/$test.json"
}
json() { # test, field -> the number
  sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" "$OUT/$1.json"
}
sockperf_pp() { # sockperf ping-pong options (e.g. --tcp, -m 64, spinning) -> its output
  "${at_a[@]}" sockperf server -i "$SERVER" -p 11111 "$@" >/dev/null 2>&1 &
  local pid=$!
  sleep 0.5
  "${at_b[@]}" sockperf ping-pong -i "$SERVER" -p 11111 -t 3 "$@" 2>&1
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}
p50() { awk '/percentile 50.000 =/ { print $NF }'; }
ratio() { # what, ours, theirs
  awk -v w="$1" -v x="$2" -v k="$3" 'BEGIN { if (x > 0 && k > 0) printf "%s: ratio %.2f\n", w, x / k }'
}
# sockperf twice: as it runs by default (blocking in epoll, so each message may wake an idle
# CPU, which costs tens of microseconds on a VM) and spinning as xrdma's tests do.
SPIN=(--nonblocked --timeout 0)

for test in raw-lat raw-bw ud-lat ud-bw; do
  echo "== xrdma perf $test"
  xrdma "$test"
done
for mode in default spinning; do
  if [ "$mode" = default ]; then opts=(); else opts=("${SPIN[@]}"); fi
  echo "== kernel UDP ping-pong (sockperf, 64 B, $mode) on the same link"
  k50=$(sockperf_pp -m 64 "${opts[@]}" | tee "$OUT/udp-$mode.txt" | p50)
  grep -E 'avg-latency|percentile 50.000|percentile 99.000' "$OUT/udp-$mode.txt" || true
  for test in raw-lat ud-lat; do
    ratio "$test p50 $(json "$test" lat_us_p50) us vs kernel UDP ($mode) p50 $k50 us" "$(json "$test" lat_us_p50)" "$k50"
  done
done

echo "== xrdma perf rc-send-lat, rc-send-bw (64 B), rc-write-bw (64 KiB)"
xrdma rc-send-lat
xrdma rc-send-bw
xrdma rc-write-bw --size 65536
for mode in default spinning; do
  if [ "$mode" = default ]; then opts=(); else opts=("${SPIN[@]}"); fi
  echo "== kernel TCP ping-pong (sockperf --tcp, 64 B, $mode) on the same link"
  k50=$(sockperf_pp --tcp -m 64 "${opts[@]}" | tee "$OUT/tcp-$mode.txt" | p50)
  grep -E 'avg-latency|percentile 50.000|percentile 99.000' "$OUT/tcp-$mode.txt" || true
  ratio "rc-send-lat p50 $(json rc-send-lat lat_us_p50) us vs kernel TCP ($mode) p50 $k50 us" "$(json rc-send-lat lat_us_p50)" "$k50"
done
echo "== kernel TCP bulk throughput (iperf3, 3 s) on the same link"
"${at_a[@]}" iperf3 -s -1 -B "$SERVER" -p 5202 >/dev/null 2>&1 &
# The client must not race the server's listen (a refused connection ends the demo).
for _ in $(seq 100); do
  "${at_a[@]}" ss -ltn "sport = :5202" | grep -q LISTEN && break
  sleep 0.05
done
tcp_gbps=$("${at_b[@]}" iperf3 -c "$SERVER" -p 5202 -t 3 -f g 2>&1 |
  awk '/receiver/ { for (i = 1; i < NF; i++) if ($(i + 1) == "Gbits/sec") print $i }')
wait
echo "iperf3 TCP: $tcp_gbps Gbit/s"
ratio "rc-write-bw 64 KiB $(json rc-write-bw gbps) Gbit/s vs kernel TCP $tcp_gbps Gbit/s" "$(json rc-write-bw gbps)" "$tcp_gbps"
ratio "rc-send-bw 64 B $(json rc-send-bw msg_rate) msg/s vs ud-bw $(json ud-bw msg_rate) msg/s" "$(json rc-send-bw msg_rate)" "$(json ud-bw msg_rate)"
if [ "$(id -u)" -eq 0 ]; then
  # The other backend on the same link: kernel UDP, which moves a message's packets 64 KiB per
  # system call (GSO/GRO), where copy-mode AF_XDP on a veth moves one per frame.
  echo "== xrdma perf rc-write-bw (64 KiB) over the udp backend on the same link"
  mv "$OUT/rc-write-bw.json" "$OUT/rc-write-bw-xdp.json"
  xa=(--iface xrdemo0 --backend udp) xb=(--iface xrdemo1 --backend udp)
  xrdma rc-write-bw --size 65536
  xa=(--iface xrdemo0 --backend xdp) xb=(--iface xrdemo1 --backend xdp)
  mv "$OUT/rc-write-bw.json" "$OUT/rc-write-bw-udp.json"
  mv "$OUT/rc-write-bw-xdp.json" "$OUT/rc-write-bw.json"
  ratio "rc-write-bw 64 KiB over udp $(json rc-write-bw-udp gbps) Gbit/s vs kernel TCP $tcp_gbps Gbit/s" "$(json rc-write-bw-udp gbps)" "$tcp_gbps"
fi

echo "== xrdma perf cm-connect: RC connections set up and torn down by the connection manager"
xrdma cm-connect

# Stream rsockets as a program uses them (write, read), next to the kernel's TCP measured by
# the same harness on the same addresses: by default (rsocket polls 10 us, then sleeps; TCP
# blocks) and both spinning.
echo "== xrdma perf rs-lat, rs-bw (stream rsockets) and tcp-lat, tcp-bw (kernel TCP)"
for mode in default spinning; do
  if [ "$mode" = default ]; then server_opts=(); else server_opts=(--polling-time 1000000); fi
  xrdma rs-lat "${server_opts[@]}"
  cp "$OUT/rs-lat.json" "$OUT/rs-lat-$mode.json"
  xrdma tcp-lat "${server_opts[@]}"
  cp "$OUT/tcp-lat.json" "$OUT/tcp-lat-$mode.json"
  server_opts=()
  ratio "rs-lat 64 B p50 $(json rs-lat-$mode lat_us_p50) us vs kernel TCP ($mode) p50 $(json tcp-lat-$mode lat_us_p50) us" "$(json rs-lat-$mode lat_us_p50)" "$(json tcp-lat-$mode lat_us_p50)"
done
xrdma rs-dgram-lat
ratio "rs-dgram-lat 64 B p50 $(json rs-dgram-lat lat_us_p50) us vs kernel UDP (default) p50 $(p50 < "$OUT/udp-default.txt") us" "$(json rs-dgram-lat lat_us_p50)" "$(p50 < "$OUT/udp-default.txt")"
xrdma rs-bw --size 65536
xrdma tcp-bw --size 65536
ratio "rs-bw 64 KiB $(json rs-bw gbps) Gbit/s vs kernel TCP $(json tcp-bw gbps) Gbit/s" "$(json rs-bw gbps)" "$(json tcp-bw gbps)"
ratio "rs-bw 64 KiB $(json rs-bw gbps) Gbit/s vs rc-write-bw $(json rc-write-bw gbps) Gbit/s" "$(json rs-bw gbps)" "$(json rc-write-bw gbps)"

if [ "$(id -u)" -eq 0 ]; then
  # rdma-core's rdma_cm programs, unmodified, over libxrdma.so: the connection manager
  # speaks the IB CM on the wire as Linux does.
  echo "== rping -C 100 (rdma_cm, SEND + RDMA READ/WRITE) over libxrdma.so"
  "${at_a[@]}" env LD_PRELOAD="$LIB" XRDMA_IFACE=xrdemo0 \
    stdbuf -oL rping -s -a "$SERVER" -C 100 -d > "$OUT/rping-server.txt" 2>&1 &
  pid=$!
  for _ in $(seq 200); do grep -q rdma_listen "$OUT/rping-server.txt" && break; sleep 0.05; done
  "${at_b[@]}" env LD_PRELOAD="$LIB" XRDMA_IFACE=xrdemo1 \
    rping -c -a "$SERVER" -C 100 -v | tail -n 1
  wait "$pid"
  echo "== cmtime -c 200 (rdma_cm connection set-up and teardown) over libxrdma.so"
  "${at_a[@]}" env LD_PRELOAD="$LIB" XRDMA_IFACE=xrdemo0 cmtime -c 200 >/dev/null 2>&1 &
  pid=$!
  sleep 0.5
  "${at_b[@]}" env LD_PRELOAD="$LIB" XRDMA_IFACE=xrdemo1 cmtime -c 200 -s "$SERVER"
  kill "$pid"
  wait "$pid" 2>/dev/null || true

  # rdma-core's own ibv_rc_pingpong, unmodified, over libxrdma.so: RC SENDs both ways. Polling
  # is compared with sockperf's TCP ping-pong spinning, completion events (-e) with sockperf
  # blocking as it does by default. sockperf reports one-way latency; a round trip is twice it.
  # Path MTU 4096 (-m; ibv_rc_pingpong's default is 1024), as the jumbo-frame link allows.
  rc_pingpong() { # ibv_rc_pingpong options -> the client's "... usec/iter" line
    "${at_a[@]}" env LD_PRELOAD="$LIB" XRDMA_IFACE=xrdemo0 \
      ibv_rc_pingpong -g 0 -m 4096 -n 2000 "$@" >/dev/null &
    local pid=$!
    sleep 0.5
    "${at_b[@]}" env LD_PRELOAD="$LIB" XRDMA_IFACE=xrdemo1 \
      ibv_rc_pingpong -g 0 -m 4096 -n 2000 "$@" "$SERVER" | grep 'usec/iter'
    wait "$pid"
  }
  for size in 4096 65536; do
    for mode in polling events; do
      if [ "$mode" = polling ]; then rc=(); tcp=("${SPIN[@]}"); else rc=(-e); tcp=(); fi
      echo "== ibv_rc_pingpong -m 4096 -s $size ($mode) over xrdma vs kernel TCP ping-pong"
      line=$(rc_pingpong -s "$size" "${rc[@]}")
      echo "$line"
      # sockperf's TCP messages are at most 65,000 bytes.
      k=$(sockperf_pp --tcp -m "$((size > 65000 ? 65000 : size))" "${tcp[@]}" |
        awk '/avg-latency=/ { sub(/.*avg-latency=/, ""); print 2 * $1 }')
      x=$(echo "$line" | awk '{ print $(NF - 1) }')
      ratio "rc_pingpong $size B $x us/iter vs kernel TCP round trip ($mode) $k us" "$x" "$k"
    done
  done
else
  echo "== ibv_rc_pingpong over libxrdma.so: skipped, it needs two hosts (run as root)"
fi
rm -rf "$OUT"
