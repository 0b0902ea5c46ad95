#!/usr/bin/env bash
# tests/slurm-qos.sh -- a second single-node Slurm 22.05 (Debian 12), WITH accounting (slurmdbd +
# MariaDB), so that QOS / association limits (MaxSubmitJobsPerUser / MaxSubmitJobs) are enforced:
# what the job-cap and preemption tests in coordinator/tests/cli_slurm.rs run against. tests/run-all.sh starts it
# as root and exports HSM_TEST_SLURM_QOS_CONF; without it those tests skip.
# Everything (MariaDB datadir+socket, munge key+socket, Slurm state/spool/logs) lives under DIR.
#
#   slurm-qos.sh install     apt-get install slurmctld slurmd slurm-client munge slurmdbd mariadb-server
#   slurm-qos.sh up DIR      start mariadbd, munged, slurmdbd, slurmctld, slurmd; create cluster/account/user;
#                            set QOS normal MaxSubmitJobsPerUser=$SLURM_QOS_MAXSUBMIT (default 8);
#                            QOS urgent preempts QOS scavenger (PreemptMode CANCEL), for the
#                            preemption tests
#   slurm-qos.sh down DIR    cancel jobs, stop all daemons by recorded PIDs (reverse order)
#   slurm-qos.sh status DIR
#
# Clients: `. DIR/env.sh` (sets SLURM_CONF=DIR/etc/slurm.conf). Ports: SLURM_QOS_PORT_BASE (default
# 16817): slurmctld=BASE, slurmd=BASE+1, slurmdbd=BASE+2 (clear of tests/slurm.sh's 6817-6818).
set -euo pipefail

PORT_BASE=${SLURM_QOS_PORT_BASE:-16817}
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
MAXSUBMIT=${SLURM_QOS_MAXSUBMIT:-8}
CLUSTER=${SLURM_QOS_CLUSTER:-qostest}
NODE=${SLURM_QOS_NODE:-qosnode}
ACCOUNT=testacct
CRED_EXPIRE=${SLURM_QOS_CRED_EXPIRE:-10}   # also = delay before a requeued job may start again
DBPASS=slurmdbpw
# keep MariaDB small: ~26 MB datadir instead of ~114 MB
MYOPTS=(--innodb-log-file-size=8M --innodb-buffer-pool-size=32M --innodb-data-file-path=ibdata1:12M:autoextend)
DAEMONS=(mariadbd munged slurmdbd slurmctld slurmd)    # start order; stopped in reverse

log() { echo "[slurm-qos.sh $(date +%T.%3N)] $*" >&2; }
die() { echo "[slurm-qos.sh] ERROR: $*" >&2; exit 1; }

install_pkgs() {
  local pkgs=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server) missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  # no systemd: keep invoke-rc.d from starting munge/mariadb/slurm* from /etc/init.d during install
  local made_policy=0
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
readpid() { cat "$1" 2>/dev/null || true; }

wait_for() {  # wait_for TIMEOUT_S DESCRIPTION CMD...  (WATCH=pidfile: fail fast if that daemon died)
  local t=$1 what=$2 i; shift 2
  for ((i = 0; i < t * 4; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [ -n "${WATCH:-}" ] && ! pid_alive "$(readpid "$WATCH")"; then die "$what: daemon of $WATCH exited (see logs)"; fi
    sleep 0.25
  done
  die "timeout (${t}s) waiting for: $what"
}

stop_pid() {  # stop_pid PID NAME TIMEOUT
  local pid=$1 name=$2 t=${3:-20} i
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < t * 10; i++)); do pid_alive "$pid" || { log "$name ($pid) stopped"; return 0; }; sleep 0.1; done
  log "$name ($pid) did not stop after ${t}s, SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.2
}

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }

start_bg() {  # start_bg NAME LOGFILE CMD... (daemon must stay in the foreground)
  local name=$1 logf=$2; shift 2
  setsid "$@" </dev/null >"$logf" 2>&1 &
  echo $! > "$D/pids/$name.pid"
}

up() {
  D=$(realpath -m "$1")
  install_pkgs
  local n
  for n in "${DAEMONS[@]}"; do
    pid_alive "$(readpid "$D/pids/$n.pid")" && die "$n already running from $D; run down first"
  done
  for n in $CTLD_PORT $SLURMD_PORT $DBD_PORT; do port_free "$n" || die "TCP port $n in use (set SLURM_QOS_PORT_BASE)"; done
  rm -rf "$D/mysql" "$D/munge" "$D/etc" "$D/state" "$D/spool" "$D/log" "$D/pids" "$D/work"
  mkdir -p "$D/mysql/data" "$D/munge" "$D/etc" "$D/state" "$D/spool" "$D/log" "$D/pids" "$D/work"
  # munged wants every directory above its socket searchable by all (mktemp -d makes 0700)
  chmod 755 "$D"
  local H; H=$(hostname -s)
  local SOCK=$D/mysql/mysqld.sock MSOCK=$D/munge/munge.sock

  # ---------------- MariaDB (no systemd, no /etc/mysql config: --no-defaults; unix socket only)
  mariadb-install-db --no-defaults --datadir="$D/mysql/data" --user=root \
      --auth-root-authentication-method=socket --skip-test-db "${MYOPTS[@]}" >"$D/log/mysql-install.log" 2>&1 \
      || die "mariadb-install-db failed, see $D/log/mysql-install.log"
  # mariadbd stays in the foreground; --user=root is required to run it as root
  start_bg mariadbd "$D/log/mariadbd.out" mariadbd --no-defaults --datadir="$D/mysql/data" \
      --socket="$SOCK" --pid-file="$D/mysql/mariadbd.pid" --skip-networking --skip-name-resolve \
      --user=root --log-error="$D/log/mariadbd.err" "${MYOPTS[@]}"
  WATCH=$D/pids/mariadbd.pid wait_for 60 "mariadbd socket" mariadb-admin --no-defaults -S "$SOCK" -u root ping
  mariadb --no-defaults -S "$SOCK" -u root -e \
      "CREATE USER 'slurm'@'localhost' IDENTIFIED BY '$DBPASS'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  log "mariadbd up (pid $(readpid "$D/pids/mariadbd.pid"), socket $SOCK)"

  # ---------------- munge: own key + socket (a system munged with another key may be running)
  chmod 755 "$D/munge"   # munged: "Socket is inaccessible: execute permissions for all required" otherwise
  mungekey --create --keyfile="$D/munge/munge.key"
  start_bg munged "$D/log/munged.log" munged -F --socket="$MSOCK" --key-file="$D/munge/munge.key" \
      --pid-file="$D/munge/munged.pid" --seed-file="$D/munge/munged.seed" --log-file="$D/log/munged.file.log"
  WATCH=$D/pids/munged.pid wait_for 20 "munged" bash -c "munge -S '$MSOCK' -n | unmunge -S '$MSOCK'"
  log "munged up (pid $(readpid "$D/pids/munged.pid"))"

  # ---------------- Slurm config
  cat > "$D/etc/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$H(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# socket= : munge socket for slurmctld/slurmd/clients; cred_expire also delays a requeued job's restart
AuthInfo=socket=$MSOCK,cred_expire=$CRED_EXPIRE
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# For auth/munge, connections to slurmdbd (sacctmgr, sacct, slurmctld) take the munge socket from
# AccountingStoragePass, NOT from AuthInfo -> without this they use /run/munge/munge.socket.2
AccountingStoragePass=$MSOCK
AccountingStorageEnforce=associations,limits,qos
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
PlugStackConfig=$D/etc/plugstack.conf
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/state/slurmctld.pid
SlurmdPidFile=$D/spool/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MaxArraySize=1001
MinJobAge=300
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SlurmdParameters=config_overrides
# A job of QOS urgent preempts (cancels: state PREEMPTED) jobs of QOS scavenger it needs room of.
PreemptType=preempt/qos
PreemptMode=CANCEL
NodeName=$NODE NodeHostname=$H NodeAddr=127.0.0.1 Port=$SLURMD_PORT CPUs=16 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  : > "$D/etc/plugstack.conf"
  # slurmdbd.conf is looked up next to SLURM_CONF; must be 0600 and owned by SlurmUser
  cat > "$D/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MSOCK
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$D/log/slurmdbd.log
PidFile=$D/state/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$D/etc/slurmdbd.conf"
  cat > "$D/env.sh" <<EOF
export SLURM_CONF=$D/etc/slurm.conf
EOF
  export SLURM_CONF=$D/etc/slurm.conf

  # ---------------- slurmdbd (MYSQL_UNIX_PORT: libmariadb's default socket for host "localhost")
  start_bg slurmdbd "$D/log/slurmdbd.out" env MYSQL_UNIX_PORT="$SOCK" slurmdbd -D
  WATCH=$D/pids/slurmdbd.pid wait_for 60 "slurmdbd answers sacctmgr" sacctmgr -n show cluster
  log "slurmdbd up (pid $(readpid "$D/pids/slurmdbd.pid"), port $DBD_PORT)"

  # ---------------- accounting objects (before slurmctld registers)
  sacctmgr -i add cluster "$CLUSTER" >/dev/null
  sacctmgr -i add account "$ACCOUNT" Description=test Organization=test Cluster="$CLUSTER" >/dev/null
  sacctmgr -i add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null
  sacctmgr -i modify user root set DefaultAccount="$ACCOUNT" >/dev/null   # root already exists in account root
  sacctmgr -i modify qos normal set MaxSubmitJobsPerUser="$MAXSUBMIT" >/dev/null
  sacctmgr -i add qos scavenger >/dev/null
  sacctmgr -i modify qos scavenger set PreemptMode=cancel >/dev/null
  sacctmgr -i add qos urgent >/dev/null
  sacctmgr -i modify qos urgent set Preempt=scavenger >/dev/null
  sacctmgr -i modify user root set qos+=scavenger,urgent >/dev/null

  # ---------------- slurmctld + slurmd
  start_bg slurmctld "$D/log/slurmctld.out" slurmctld -D
  WATCH=$D/pids/slurmctld.pid wait_for 60 "slurmctld ping" bash -c "scontrol ping | grep -q UP"
  log "slurmctld up (pid $(readpid "$D/pids/slurmctld.pid"), port $CTLD_PORT)"
  start_bg slurmd "$D/log/slurmd.out" slurmd -D -N "$NODE"
  WATCH=$D/pids/slurmd.pid wait_for 60 "node $NODE idle" bash -c "sinfo -h -n '$NODE' -o %T | grep -qx idle"
  wait_for 30 "cluster registered in slurmdbd" bash -c "sacctmgr -n -P show cluster format=cluster,controlport | grep -qx '$CLUSTER|$CTLD_PORT'"
  log "slurmd up (pid $(readpid "$D/pids/slurmd.pid")); node $NODE idle; QOS normal MaxSubmitJobsPerUser=$MAXSUBMIT; urgent preempts scavenger"
  log "use: . $D/env.sh"
}

instance_steps() {  # slurmstepd processes started by THIS instance (their environ carries our SLURM_CONF)
  local p
  for p in /proc/[0-9]*; do
    [ "$(cat "$p/comm" 2>/dev/null)" = slurmstepd ] || continue
    tr '\0' '\n' < "$p/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$D/etc/slurm.conf" && echo "${p#/proc/}"
  done
  return 0
}

descendants() {
  local c
  for c in $(ps -eo pid=,ppid= | awk -v p="$1" '$2==p{print $1}'); do echo "$c"; descendants "$c"; done
}

down() {
  D=$(realpath -m "$1")
  local i
  if pid_alive "$(readpid "$D/pids/slurmctld.pid")"; then
    export SLURM_CONF=$D/etc/slurm.conf
    scancel --user=root >/dev/null 2>&1 || true
    for ((i = 0; i < 60; i++)); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.25; done
  fi
  # leftover steps/jobs (e.g. slurmctld already dead): kill by PID
  local s k all=""
  for s in $(instance_steps); do all="$all $s $(descendants "$s")"; done
  for k in $all; do kill -KILL "$k" 2>/dev/null || true; done
  local idx
  for ((idx = ${#DAEMONS[@]} - 1; idx >= 0; idx--)); do
    n=${DAEMONS[$idx]}
    stop_pid "$(readpid "$D/pids/$n.pid")" "$n" 30
    rm -f "$D/pids/$n.pid"
  done
  log "down"
}

status() {
  D=$(realpath -m "$1"); local n
  for n in "${DAEMONS[@]}"; do
    if pid_alive "$(readpid "$D/pids/$n.pid")"; then echo "$n: running (pid $(readpid "$D/pids/$n.pid"))"; else echo "$n: stopped"; fi
  done
}

case "${1:-}" in
  install) install_pkgs ;;
  up)     [ $# -eq 2 ] || die "usage: $0 up DIR"; up "$2" ;;
  down)   [ $# -eq 2 ] || die "usage: $0 down DIR"; down "$2" ;;
  status) [ $# -eq 2 ] || die "usage: $0 status DIR"; status "$2" ;;
  *) echo "usage: $0 install | up DIR | down DIR | status DIR" >&2; exit 2 ;;
esac
