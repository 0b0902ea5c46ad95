#!/usr/bin/env bash
# Two SSH hosts on this machine for the tests of `agent deploy` (coordinator/tests/cli_deploy.rs)
# and of the ssh transport (cli_ssh_netns.rs): network namespaces, each running its own OpenSSH
# server (own sshd_config, host key, authorized_keys and HOME under DIR; key-only root login).
# Adapted from the project's tested recipe. Needs root, iproute2, iptables and openssh-server
# (`install` gets them; tests/run-all.sh runs it when root).
#
#   h1  TAG-h1  NET.2  <-veth->  NET.1 (root ns)   UDP reaches it
#   h2  TAG-h2  NET.6  <-veth->  NET.5 (root ns)   a "login node": all UDP from outside dropped
#                                                  (iptables; its loopback still carries UDP, so
#                                                  an ssh relay reaches the agent there)
#
# NET is 10.233.K (K derived from TAG) so tests with different TAGs run side by side; a
# blackhole route for NET.0/24 in the root namespace while up keeps anything sent to that range
# from leaving the machine. Each sshd sets HOME=DIR/hN/home for its sessions, so what a test
# installs "in the remote home" stays in DIR. SSH_NETNS_PATH, when set, is the PATH of the ssh
# sessions on both hosts (sshd's SetEnv), so a test can put its own hsm-agent first.
#
#   tests/ssh-netns.sh install
#   tests/ssh-netns.sh up DIR TAG    prints NET; writes DIR/ssh_config (Hosts h1, h2)
#   tests/ssh-netns.sh down DIR      stops what `up` started (by recorded PID), and any
#                                    hsm-agent serve left in the hosts' homes (by its lock's PID,
#                                    only if it runs in that namespace), deletes the namespaces
#
# Client: ssh -F DIR/ssh_config h1 CMD. Keep DIR short (ssh's ControlPath is a socket path).
set -euo pipefail

log() { echo "[ssh-netns.sh $(date +%T.%3N)] $*" >&2; }
die() { echo "[ssh-netns.sh] ERROR: $*" >&2; exit 1; }

install_pkgs() {
  local pkgs=(openssh-server openssh-client iproute2 iptables) missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  local made_policy=0   # no systemd here: keep the package from starting a system sshd on :22
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  return 0
}

pid_alive() {  # running and not a zombie (PID 1 here may reap orphans late)
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}
readpid() { cat "$1" 2>/dev/null | head -n1 || true; }
ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

stop_pid() {
  local pid=$1 name=$2 t=${3:-10} i
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < t * 10; i++)); do pid_alive "$pid" || return 0; sleep 0.1; done
  log "$name ($pid) ignored SIGTERM; SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

names() {  # names TAG -> sets NS1 NS2 V1R V2R NET RANGE IPs
  local tag=$1 k
  k=$(( $(printf '%s' "$tag" | cksum | cut -d' ' -f1) % 250 + 1 ))
  NET=10.233.$k; RANGE="$NET.0/24"
  NS1=$tag-h1; NS2=$tag-h2
  V1R=${tag:0:10}1r; V1N=${tag:0:10}1n     # interface names are at most 15 characters
  V2R=${tag:0:10}2r; V2N=${tag:0:10}2n
  IP1R=$NET.1; IP1N=$NET.2; IP2R=$NET.5; IP2N=$NET.6
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
  # No default route inside: a host talks only to its /30 peer (the root namespace).
}

up() {
  local D tag=$2 h; D=$(realpath -m "$1")
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, sshd)"
  [ -x /usr/sbin/sshd ] || die "no /usr/sbin/sshd ($0 install)"
  command -v iptables >/dev/null || die "no iptables ($0 install)"
  command -v ssh >/dev/null || die "no ssh client ($0 install)"
  [ ${#D} -le 60 ] || die "DIR too long (${#D} chars): ssh's ControlPath must fit in a socket path"
  names "$tag"
  ns_exists "$NS1" && die "netns $NS1 exists (a test with the same TAG runs, or a stale one: down)"
  ns_exists "$NS2" && die "netns $NS2 exists"
  ip route show | grep -q "^blackhole $RANGE" && die "$RANGE is in use by another test (blackhole route present)"
  mkdir -p "$D"
  echo "$tag" > "$D/tag"
  mkdir -p "$D"/h1/home "$D"/h2/home "$D"/keys
  chmod 700 "$D"/keys "$D"/h1/home "$D"/h2/home
  touch "$D/.netns_created"

  ip route add blackhole "$RANGE"     # the connected /30 routes are more specific and win
  make_host "$NS1" "$V1R" "$V1N" "$IP1R" "$IP1N"
  make_host "$NS2" "$V2R" "$V2N" "$IP2R" "$IP2N"
  ip netns exec "$NS2" iptables -A INPUT -i lo -j ACCEPT
  ip netns exec "$NS2" iptables -A INPUT -p udp -j DROP

  ssh-keygen -q -t ed25519 -N '' -C "hsm-test-client" -f "$D/keys/id_ed25519"
  cp "$D/keys/id_ed25519.pub" "$D/keys/authorized_keys"
  : > "$D/known_hosts"
  mkdir -p /run/sshd   # sshd's privilege separation directory
  local ns ip path=""
  [ -n "${SSH_NETNS_PATH:-}" ] && path=" PATH=$SSH_NETNS_PATH"
  for h in h1 h2; do
    if [ $h = h1 ]; then ns=$NS1; ip=$IP1N; else ns=$NS2; ip=$IP2N; fi
    ssh-keygen -q -t ed25519 -N '' -C "$h-hostkey" -f "$D/$h/ssh_host_ed25519_key"
    echo "$ip $(cut -d' ' -f1,2 "$D/$h/ssh_host_ed25519_key.pub")" >> "$D/known_hosts"
    cat > "$D/$h/sshd_config" <<CONF
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
# keys under /tmp (mode 1777) fail StrictModes
StrictModes no
LogLevel VERBOSE
UseDNS no
PrintMotd no
# this host's own home: what a session installs under ~ stays in DIR
SetEnv HOME=$D/$h/home$path
CONF
    /usr/sbin/sshd -t -f "$D/$h/sshd_config" || die "sshd -t failed for $h"
    # -D: in the foreground, so \$! is sshd's pid (ip netns exec execs); -E: its log
    setsid ip netns exec "$ns" /usr/sbin/sshd -D -f "$D/$h/sshd_config" -E "$D/$h/sshd.log" </dev/null >"$D/$h/sshd.out" 2>&1 &
    echo $! > "$D/$h/sshd.pid"
  done

  cat > "$D/ssh_config" <<CONF
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
CONF
  # Ready when it listens (checked from inside the namespace; no login, which would count in
  # the sshd log the tests read).
  local i
  for h in h1 h2; do
    if [ $h = h1 ]; then ns=$NS1; ip=$IP1N; else ns=$NS2; ip=$IP2N; fi
    for ((i = 0; i < 200; i++)); do
      ip netns exec "$ns" ss -Htln "src $ip:22" | grep -q . && break
      pid_alive "$(readpid "$D/$h/sshd.pid")" || die "sshd $h exited: $(cat "$D/$h/sshd.log" "$D/$h/sshd.out" 2>/dev/null)"
      sleep 0.1
    done
    [ $i -lt 200 ] || die "sshd $h does not listen after 20 s"
  done
  echo "$NET"
}

down() {
  local D h ns pid; D=$(realpath -m "$1")
  [ -f "$D/tag" ] || return 0
  names "$(cat "$D/tag")"
  for h in h1 h2; do
    if [ $h = h1 ]; then ns=$NS1; else ns=$NS2; fi
    # hsm-agent daemons a test left running in this host's home, by the pid in their lock
    for lock in "$D/$h"/home/.local/state/*/serve.lock; do
      [ -f "$lock" ] || continue
      pid=$(readpid "$lock")
      if pid_alive "$pid" && [ "$(ip netns identify "$pid" 2>/dev/null)" = "$ns" ]; then
        stop_pid "$pid" "hsm-agent in $h" 10
      fi
    done
    stop_pid "$(readpid "$D/$h/sshd.pid")" "sshd $h" 10
    rm -f "$D/$h/sshd.pid"
  done
  if [ -f "$D/.netns_created" ]; then
    # Deleting a namespace removes its veth pair (both ends) and its iptables rules.
    ns_exists "$NS1" && ip netns del "$NS1"
    ns_exists "$NS2" && ip netns del "$NS2"
    ip link del "$V1R" 2>/dev/null || true
    ip link del "$V2R" 2>/dev/null || true
    ip route del blackhole "$RANGE" 2>/dev/null || true
    rm -f "$D/.netns_created"
  fi
}

case "${1:-}" in
  install) install_pkgs ;;
  up)   [ $# -eq 3 ] || die "usage: $0 up DIR TAG"; up "$2" "$3" ;;
  down) [ $# -eq 2 ] || die "usage: $0 down DIR"; down "$2" ;;
  *) echo "usage: $0 install | up DIR TAG | down DIR" >&2; exit 2 ;;
esac
