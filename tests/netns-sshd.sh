#!/usr/bin/env bash
# netns-sshd.sh -- two "hosts" as network namespaces, each with its own OpenSSH server (own
# sshd_config, host key, authorized_keys under DIR; key-only root login), for the ssh transport
# tests (coordinator/tests/cli_ssh_netns.rs). Needs root, iproute2, iptables, openssh-server.
#
#   h1  ($PREFIX-h1)  $NET.2  <-veth->  $NET.1 (root ns)   plain host: UDP and TCP reach it
#   h2  ($PREFIX-h2)  $NET.6  <-veth->  $NET.5 (root ns)   "login node": its INPUT drops all UDP
#                                                          except on loopback; TCP 22 works
#   root ns: a blackhole route for $NET.0/24 while up (nothing in that range leaks out)
#
#   netns-sshd.sh up DIR      namespaces, keys, both sshd; writes DIR/ssh_config (hosts h1, h2)
#   netns-sshd.sh down DIR    stops the sshds by PID, deletes the namespaces, veths and route
#
# Environment: NETNS_SSHD_PREFIX (namespace prefix, default relay), NETNS_SSHD_NET (a /24's first
# three octets, default 10.236.0), NETNS_SSHD_PATH (PATH of ssh sessions on both hosts, so a test
# can put its own hsm-agent first; sshd's SetEnv).
# Adapted from the ssh-netns recipe of the test infrastructure notes: other prefix and range, UDP
# allowed on the login node's loopback (the relay reaches the agent there), no package install.
set -euo pipefail

PREFIX=${NETNS_SSHD_PREFIX:-relay}
NET=${NETNS_SSHD_NET:-10.236.0}
RANGE="$NET.0/24"
NS1=$PREFIX-h1; NS2=$PREFIX-h2
V1R=${PREFIX:0:6}1r; V1N=${PREFIX:0:6}1n     # veth names must be <= 15 chars
V2R=${PREFIX:0:6}2r; V2N=${PREFIX:0:6}2n
IP1R=$NET.1; IP1N=$NET.2
IP2R=$NET.5; IP2N=$NET.6

log() { echo "[netns-sshd.sh] $*" >&2; }
die() { echo "[netns-sshd.sh] ERROR: $*" >&2; exit 1; }

pid_alive() {  # running and not a zombie
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}
readpid() { cat "$1" 2>/dev/null || true; }
ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

stop_pid() {
  local pid=$1 i
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do pid_alive "$pid" || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

make_host() {  # make_host NS VETH_ROOT VETH_NS IP_ROOT IP_NS
  local ns=$1 vr=$2 vn=$3 ipr=$4 ipn=$5
  ip netns add "$ns"
  ip link add "$vr" type veth peer name "$vn"
  ip link set "$vn" netns "$ns"
  ip addr add "$ipr/30" dev "$vr"
  ip link set "$vr" up
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip addr add "$ipn/30" dev "$vn"
  ip netns exec "$ns" ip link set "$vn" up
}

up() {
  local D; D=$(realpath -m "$1")
  [ "$(id -u)" = 0 ] || die "needs root"
  [ -x /usr/sbin/sshd ] || die "no /usr/sbin/sshd (apt-get install openssh-server)"
  command -v iptables >/dev/null || die "no iptables"
  [ ${#D} -le 70 ] || die "DIR too long (${#D} chars)"
  ns_exists "$NS1" && die "netns $NS1 exists (stale? run down $D)"
  ns_exists "$NS2" && die "netns $NS2 exists (stale? run down $D)"
  ip route show | grep -q "^blackhole $RANGE" && die "blackhole route $RANGE already present"

  mkdir -p "$D"/h1 "$D"/h2 "$D"/keys
  chmod 700 "$D"/keys
  touch "$D/.netns_created"
  ip route add blackhole "$RANGE"
  make_host "$NS1" "$V1R" "$V1N" "$IP1R" "$IP1N"
  make_host "$NS2" "$V2R" "$V2N" "$IP2R" "$IP2N"
  ip netns exec "$NS2" iptables -A INPUT -i lo -j ACCEPT
  ip netns exec "$NS2" iptables -A INPUT -p udp -j DROP

  ssh-keygen -q -t ed25519 -N '' -C "relay-client" -f "$D/keys/id_ed25519"
  cp "$D/keys/id_ed25519.pub" "$D/keys/authorized_keys"
  : > "$D/known_hosts"
  mkdir -p /run/sshd
  local h ns ip setenv=""
  [ -n "${NETNS_SSHD_PATH:-}" ] && setenv="SetEnv PATH=$NETNS_SSHD_PATH"
  for h in h1 h2; do
    if [ $h = h1 ]; then ns=$NS1; ip=$IP1N; else ns=$NS2; ip=$IP2N; fi
    ssh-keygen -q -t ed25519 -N '' -C "$h-hostkey" -f "$D/$h/ssh_host_ed25519_key"
    echo "$ip $(cut -d' ' -f1,2 "$D/$h/ssh_host_ed25519_key.pub")" >> "$D/known_hosts"
    cat > "$D/$h/sshd_config" <<EOF
Port 22
ListenAddress $ip
HostKey $D/$h/ssh_host_ed25519_key
PidFile $D/$h/sshd.pidfile
AuthorizedKeysFile $D/keys/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel VERBOSE
UseDNS no
PrintMotd no
$setenv
EOF
    /usr/sbin/sshd -t -f "$D/$h/sshd_config" || die "sshd -t failed for $h"
    setsid ip netns exec "$ns" /usr/sbin/sshd -D -f "$D/$h/sshd_config" -E "$D/$h/sshd.log" </dev/null >"$D/$h/sshd.out" 2>&1 &
    echo $! > "$D/$h/sshd.pid"
  done

  cat > "$D/ssh_config" <<EOF
Host *
  User root
  IdentityFile $D/keys/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $D/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 5
  LogLevel ERROR
Host h1
  HostName $IP1N
Host h2
  HostName $IP2N
EOF
  local i
  for h in h1 h2; do
    for ((i = 0; i < 200; i++)); do
      ssh -F "$D/ssh_config" "$h" true >/dev/null 2>&1 && break
      pid_alive "$(readpid "$D/$h/sshd.pid")" || die "sshd $h exited: $(cat "$D/$h/sshd.log" 2>/dev/null)"
      sleep 0.1
    done
    [ $i -lt 200 ] || die "sshd $h does not accept a key login"
  done
  log "up: h1 $IP1N, h2 $IP2N (UDP dropped); ssh -F $D/ssh_config h1|h2"
  echo "$NET"
}

down() {
  local D h; D=$(realpath -m "$1")
  for h in h1 h2; do
    stop_pid "$(readpid "$D/$h/sshd.pid")"
    rm -f "$D/$h/sshd.pid"
  done
  if [ -f "$D/.netns_created" ]; then
    ns_exists "$NS1" && ip netns del "$NS1"
    ns_exists "$NS2" && ip netns del "$NS2"
    ip link del "$V1R" 2>/dev/null || true
    ip link del "$V2R" 2>/dev/null || true
    ip route del blackhole "$RANGE" 2>/dev/null || true
    rm -f "$D/.netns_created"
  fi
}

case "${1:-}" in
  up)   [ $# -eq 2 ] || die "usage: $0 up DIR"; up "$2" ;;
  down) [ $# -eq 2 ] || die "usage: $0 down DIR"; down "$2" ;;
  *) echo "usage: $0 up DIR | down DIR" >&2; exit 2 ;;
esac
