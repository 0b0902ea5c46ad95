#!/usr/bin/env bash
# Hosts on one machine: network namespaces joined by a bridge, for tests of what crosses a
# network. Needs root and iproute2.
#
#   tests/netns.sh up   TAG N    # hosts TAG-h0 .. TAG-h<N-1> at 10.77.<k>.1 .. 10.77.<k>.N
#   tests/netns.sh down TAG N
#   tests/netns.sh cut  TAG I    # take host I off the network (link down)
#   tests/netns.sh heal TAG I
#   tests/netns.sh loss TAG I PCT # drop PCT% of the packets host I receives (iptables, random)
#
# The 10.77.0.0/16 range exists only inside these namespaces. A blackhole route for it is added
# in the root namespace while any such test runs, so nothing sent to it can ever leave the
# machine through the default route. `k` is derived from TAG so concurrent tests do not collide.
set -euo pipefail

cmd=${1:?usage: netns.sh up|down|cut|heal|loss TAG N [PCT]}
tag=${2:?tag}
n=${3:?count or host index}
subnet=$(( $(printf '%s' "$tag" | cksum | cut -d' ' -f1) % 250 + 1 ))
br="${tag}-br"

case "$cmd" in
  up)
    ip route add blackhole 10.77.0.0/16 2>/dev/null || true
    ip netns add "$br"
    ip -n "$br" link add br0 type bridge
    ip -n "$br" link set br0 up
    for i in $(seq 0 $((n - 1))); do
      ns="${tag}-h$i"
      ip netns add "$ns"
      ip link add "v${tag}$i" type veth peer name eth0 netns "$ns"
      ip link set "v${tag}$i" netns "$br"
      ip -n "$br" link set "v${tag}$i" master br0 up
      ip -n "$ns" addr add "10.77.$subnet.$((i + 1))/24" dev eth0
      ip -n "$ns" link set eth0 up
      ip -n "$ns" link set lo up
    done
    echo "10.77.$subnet"
    ;;
  down)
    for i in $(seq 0 $((n - 1))); do ip netns del "${tag}-h$i" 2>/dev/null || true; done
    ip netns del "$br" 2>/dev/null || true
    # The route is shared by every namespace test: remove it only when none is left.
    if ! ip netns list | grep -q -- '-br'; then
      ip route del blackhole 10.77.0.0/16 2>/dev/null || true
    fi
    ;;
  cut) ip -n "${tag}-h$n" link set eth0 down ;;
  heal) ip -n "${tag}-h$n" link set eth0 up ;;
  loss)
    pct=${4:?percent}
    ip netns exec "${tag}-h$n" iptables -A INPUT -i eth0 -m statistic --mode random \
      --probability "$(printf '0.%02d' "$pct")" -j DROP
    ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
