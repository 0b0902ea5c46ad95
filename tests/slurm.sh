#!/usr/bin/env bash
# A real single-node Slurm (Debian 12's slurm 22.05) for tests, started from a per-run directory,
# following ../shared/notes/test-infrastructure.md. Needs root. No systemd is assumed: every daemon
# is started here, its PID recorded under DIR/pids/, and `down` kills exactly those PIDs (never by
# name), so another Slurm or munged on the machine is never touched by us.
#
#   tests/slurm.sh up DIR       # install if missing, start munged/slurmctld/slurmd, wait for idle;
#                               # prints `export SLURM_CONF=DIR/slurm.conf` (clients need it)
#   tests/slurm.sh status DIR   # the recorded daemons and whether each is alive; sinfo
#   tests/slurm.sh down DIR     # kill the recorded PIDs, wait for them, remove DIR
#
# Environment:
#   HSM_SLURM_MAX_ARRAY    MaxArraySize (default 1001, Slurm's own default); set low to test chunking
#   HSM_SLURM_PORT         slurmctld port (default 6817); slurmd uses this + 1
#   HSM_SLURM_WAIT         seconds to wait for the node to become idle (default 30)
#   HSM_SLURM_NO_INSTALL=1 never call apt-get (fail if the binaries are missing)
#
# munged listens on the default socket (/run/munge/munge.socket.2) because Slurm's clients look for
# it there; if a munged that is not ours already serves that socket we use it and do not stop it.
set -euo pipefail

cmd=${1:?usage: slurm.sh up|down|status DIR}
dir=${2:?usage: slurm.sh up|down|status DIR}

die() { echo "slurm.sh: $*" >&2; exit 1; }

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  [ -x /usr/sbin/munged ] || missing+=(munge)
  # The Torque/PBS command wrappers (qsub, qstat, qdel) over Slurm, unless another qsub is
  # installed (Grid Engine's conflicts with them: `keep_torque_copy` then keeps a private copy).
  local pkgs=(slurmctld slurmd slurm-client munge)
  if ! command -v qsub >/dev/null; then missing+=(slurm-wlm-torque); pkgs+=(slurm-wlm-torque); fi
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "${HSM_SLURM_NO_INSTALL:-0}" = 1 ] && die "missing ${missing[*]} and HSM_SLURM_NO_INSTALL=1"
  echo "slurm.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${pkgs[@]}" \
    >"${TMPDIR:-/tmp}/hsm-slurm-apt.log" 2>&1 || {
    # A stale package index is the usual cause: refresh once and retry.
    apt-get update >>"${TMPDIR:-/tmp}/hsm-slurm-apt.log" 2>&1 || true
    apt-get install -y --no-install-recommends "${pkgs[@]}" \
      >>"${TMPDIR:-/tmp}/hsm-slurm-apt.log" 2>&1 ||
      die "apt-get install failed, see ${TMPDIR:-/tmp}/hsm-slurm-apt.log"
  }
}

# When the qsub on PATH is not Debian's wrapper over Slurm (Grid Engine's client replaced it),
# a copy of slurm-wlm-torque's commands unpacked under DIR/torque (the PBS tests put
# DIR/torque/usr/bin first on the agent's PATH). Best effort: without it those tests skip.
keep_torque_copy() {
  local qsub
  qsub=$(command -v qsub || true)
  if [ -n "$qsub" ] && grep -q Slurm "$qsub" 2>/dev/null; then return 0; fi
  # What the wrappers need (slurm-wlm-torque's Depends, but for slurm-client): without
  # libslurmdb-perl, qstat dies at its `use Slurmdb` and every PBS task waits, unfollowed.
  local dep deps=()
  for dep in libslurm-perl libslurmdb-perl libswitch-perl; do
    # (`dpkg -s` also succeeds for a package removed but not purged.)
    [ "$(dpkg-query -W -f='${Status}' "$dep" 2>/dev/null)" = "install ok installed" ] || deps+=("$dep")
  done
  if [ ${#deps[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${deps[@]}" \
      >>"${TMPDIR:-/tmp}/hsm-slurm-apt.log" 2>&1 ||
      echo "slurm.sh: could not install ${deps[*]}; the PBS tests will fail at qstat" >&2
  fi
  mkdir -p "$dir/torque-pkg"
  if (cd "$dir/torque-pkg" && apt-get download slurm-wlm-torque >>"${TMPDIR:-/tmp}/hsm-slurm-apt.log" 2>&1) &&
    dpkg-deb -x "$dir"/torque-pkg/slurm-wlm-torque_*.deb "$dir/torque"; then
    # The wrappers run Slurm's commands from their own directory ($FindBin::Bin/sbatch).
    local c
    for c in sbatch salloc srun; do
      if command -v "$c" >/dev/null; then ln -sf "$(command -v "$c")" "$dir/torque/usr/bin/$c"; fi
    done
    echo "slurm.sh: Slurm's qsub/qstat/qdel wrappers kept in $dir/torque/usr/bin (the installed qsub is ${qsub:-none})" >&2
  else
    echo "slurm.sh: could not unpack slurm-wlm-torque; the PBS tests will skip" >&2
  fi
  rm -rf "$dir/torque-pkg"
}

# Reads a PID file written by a daemon, waiting a little for it to appear.
wait_pidfile() {
  local file=$1 name=$2 i
  for i in $(seq 1 100); do
    if [ -s "$file" ] && kill -0 "$(cat "$file")" 2>/dev/null; then
      cat "$file"
      return 0
    fi
    sleep 0.1
  done
  die "$name did not start (no live PID in $file); see its log under $dir/log"
}

munge_works() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

up() {
  [ "$(id -u)" = 0 ] || die "needs root"
  install_packages
  [ -e "$dir/pids" ] && die "$dir already holds a Slurm (run: $0 down $dir)"
  mkdir -p "$dir"/{pids,log,state,spool}
  # munged and slurmd run as other users and must reach their files (mktemp -d makes 0700).
  chmod 0755 "$dir"
  dir=$(cd "$dir" && pwd)
  local host port max_array
  host=$(hostname -s)
  port=${HSM_SLURM_PORT:-6817}
  max_array=${HSM_SLURM_MAX_ARRAY:-1001}
  keep_torque_copy

  # munge: the package creates /etc/munge/munge.key.
  if munge_works; then
    echo "slurm.sh: using the munged already running (not ours; left alone by down)" >&2
  else
    mkdir -p /run/munge && chown munge:munge /run/munge
    mkdir -p "$dir/munge" && chown munge:munge "$dir/munge"
    runuser -u munge -- /usr/sbin/munged --pid-file="$dir/munge/munged.pid" \
      --log-file="$dir/munge/munged.log"
    wait_pidfile "$dir/munge/munged.pid" munged >"$dir/pids/munged"
    local i
    for i in $(seq 1 50); do munge_works && break; sleep 0.1; done
    munge_works || die "munged started but munge -n | unmunge fails; see $dir/munge/munged.log"
  fi

  # PBS_* variables in jobs submitted through the qsub wrapper need the spank_pbs plugin.
  local spank=/usr/lib/x86_64-linux-gnu/slurm-wlm/spank_pbs.so
  if [ -e "$spank" ]; then echo "optional $spank" >"$dir/plugstack.conf"; else : >"$dir/plugstack.conf"; fi

  # The lines of the tested recipe: no cgroups, no accounting daemon, 16 declared CPUs so array
  # elements run in parallel on a 2-core box, and no batch scheduling delay.
  cat >"$dir/slurm.conf" <<EOF
ClusterName=hsmtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
PlugStackConfig=$dir/plugstack.conf
MaxArraySize=$max_array
MaxJobCount=100000
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=16 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

  slurmctld -f "$dir/slurm.conf" || die "slurmctld failed to start; see $dir/log/slurmctld.log"
  wait_pidfile "$dir/slurmctld.pid" slurmctld >"$dir/pids/slurmctld"
  slurmd -f "$dir/slurm.conf" || die "slurmd failed to start; see $dir/log/slurmd.log"
  wait_pidfile "$dir/slurmd.pid" slurmd >"$dir/pids/slurmd"

  local wait_s=${HSM_SLURM_WAIT:-30} deadline state=""
  deadline=$(($(date +%s) + wait_s))
  while :; do
    state=$(SLURM_CONF="$dir/slurm.conf" sinfo -h -o %T 2>/dev/null | head -n1 || true)
    [ "$state" = idle ] && break
    if [ "$(date +%s)" -ge "$deadline" ]; then
      die "node not idle after ${wait_s}s (last sinfo state: '${state:-none}'); logs in $dir/log"
    fi
    sleep 0.1
  done
  echo "export SLURM_CONF=$dir/slurm.conf"
}

status() {
  [ -d "$dir/pids" ] || { echo "no Slurm recorded in $dir"; return 1; }
  local f pid
  for f in "$dir"/pids/*; do
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then echo "$(basename "$f") $pid alive"; else echo "$(basename "$f") $pid dead"; fi
  done
  SLURM_CONF="$dir/slurm.conf" sinfo 2>&1 || true
}

down() {
  [ -d "$dir" ] || return 0
  if [ -d "$dir/pids" ]; then
    local f pid pids=() i
    # slurmd first so no job step outlives its controller, munged last.
    for f in slurmd slurmctld munged; do
      [ -f "$dir/pids/$f" ] || continue
      pid=$(cat "$dir/pids/$f")
      if kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; pids+=("$pid"); fi
    done
    for pid in "${pids[@]}"; do
      for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    done
  fi
  rm -rf "$dir"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "unknown command $cmd (up|down|status)" ;;
esac
