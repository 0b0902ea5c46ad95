#!/usr/bin/env bash
# tests/sge.sh -- single-node Son of Grid Engine 8.1.9 (Debian 12 packages), what the Grid Engine
# backend tests (coordinator/tests/cli_sge.rs) run against. tests/run-all.sh starts it as root and
# exports HSM_TEST_SGE_ENV (DIR/env.sh); without it those tests skip. A parallel environment `smp`
# (slots on one host) is attached to all.q, for `-pe smp N`.
#
# Installing gridengine-client replaces Debian's Slurm qsub/qstat wrappers (slurm-wlm-torque) in
# /usr/bin: tests/slurm.sh keeps a private copy of those for the PBS tests.
#
#   sge.sh install        apt-get install gridengine-{master,exec,client} (preseeded,
#                         no cell is created under /var/lib/gridengine, no daemon started)
#   sge.sh up DIR         fresh cell under DIR, start sge_qmaster + sge_execd, queue all.q (4 slots)
#   sge.sh test DIR       smoke test (array job -t 1-5 -tc 2, qstat -xml, qacct, qdel); samples in DIR/samples
#   sge.sh down DIR       delete jobs, stop daemons by recorded PIDs (plus leftover shepherds/jobs)
#   sge.sh status DIR
#
# Clients: `. DIR/env.sh` (sets SGE_ROOT, SGE_CELL, SGE_QMASTER_PORT, SGE_EXECD_PORT).
# Environment knobs: SGE_QMASTER_PORT (default 6444), SGE_EXECD_PORT (default 6445), SGE_SLOTS (4),
#                    SGE_QMASTER_STOP_TIMEOUT (30; seconds before SIGKILL in down).
set -euo pipefail

QPORT=${SGE_QMASTER_PORT:-6444}
EPORT=${SGE_EXECD_PORT:-6445}
SLOTS=${SGE_SLOTS:-4}
LIB=/usr/lib/gridengine
HOSTS_TAG="# added-by-sge.sh"

log() { echo "[sge.sh $(date +%T.%3N)] $*" >&2; }
die() { echo "[sge.sh] ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- install
install_pkgs() {
  if dpkg-query -W -f='${Status}\n' gridengine-master gridengine-exec gridengine-client 2>/dev/null \
       | grep -c 'install ok installed' | grep -qx 3; then
    return 0
  fi
  log "installing gridengine packages"
  # shared/gridengineconfig=false: postinst does NOT run init_cluster into /var/lib/gridengine;
  # we build our own cell under DIR in `up`.
  debconf-set-selections <<'EOF'
gridengine-common shared/gridengineconfig boolean false
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string localhost
gridengine-master shared/gridengineconfig boolean false
gridengine-client shared/gridengineconfig boolean false
gridengine-exec   shared/gridengineconfig boolean false
EOF
  # Without systemd, invoke-rc.d would try /etc/init.d scripts (exim4 from the bsd-mailx
  # dependency, gridengine-master, gridengine-exec).  Block that with policy-rc.d if the
  # image does not already have one (Docker images usually do).
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      gridengine-master gridengine-exec gridengine-client >/dev/null
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  return 0
}

# ---------------------------------------------------------------- helpers
pid_alive() {  # running and not a zombie (PID 1 here may reap orphans late)
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null && [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" != Z ]
}
readpid() { cat "$1" 2>/dev/null || true; }

descendants() {  # all descendant PIDs of $1 (children first-level, recursively)
  local p c
  for c in $(ps -eo pid=,ppid= | awk -v p="$1" '$2==p{print $1}'); do
    echo "$c"; descendants "$c"
  done
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

run_q() {  # run a command quietly, die with its output if it fails
  local out
  out=$("$@" 2>&1) || die "'$*' failed: $out"
}

load_env() {
  local D=$1
  [ -f "$D/env.sh" ] || die "$D/env.sh missing (is it up?)"
  # shellcheck disable=SC1090
  . "$D/env.sh"
}

wait_for() {  # wait_for TIMEOUT_S DESCRIPTION CMD...  (WATCH=pidfile: fail fast if that daemon died)
  local t=$1 what=$2 i; shift 2
  for ((i = 0; i < t * 4; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [ -n "${WATCH:-}" ] && ! pid_alive "$(readpid "$WATCH")"; then die "$what: daemon of $WATCH exited (see logs)"; fi
    sleep 0.25
  done
  die "timeout (${t}s) waiting for: $what"
}

# ---------------------------------------------------------------- up
up() {
  local D; D=$(realpath -m "$1")
  install_pkgs
  for n in qmaster execd; do
    pid_alive "$(readpid "$D/pids/$n.pid")" && die "$n already running from $D (pid $(readpid "$D/pids/$n.pid")); run down first"
  done
  for n in "$QPORT" "$EPORT"; do
    ! ss -Hltn "sport = :$n" | grep -q . || die "TCP port $n in use (set SGE_QMASTER_PORT/SGE_EXECD_PORT)"
  done
  rm -rf "$D/root" "$D/spool" "$D/pids" "$D/log" "$D/cfg"
  mkdir -p "$D/root/default/common" "$D/spool/qmaster/job_scripts" "$D/spool/execd" "$D/spool/spooldb" \
           "$D/pids" "$D/log" "$D/cfg"
  local R=$D/root C=$D/root/default/common
  # binaries/arch tables are shared with the Debian SGE_ROOT
  for x in bin lib utilbin util; do ln -s "/var/lib/gridengine/$x" "$R/$x"; done

  # ---- host name handling (containers: hostname may not resolve, or resolve to 127.0.0.1
  #      whose reverse lookup is "localhost" -> commlib sees "localhost", qmaster thinks "vm")
  # SGE resolves both the full and the short (up to the first dot) host name; both must resolve.
  local HN add="" n; HN=$(hostname)
  for n in "$HN" "${HN%%.*}"; do
    getent hosts "$n" >/dev/null || case " $add " in *" $n "*) ;; *) add="$add $n" ;; esac
  done
  if [ -n "$add" ]; then
    log "host name(s)$add do not resolve; adding '127.0.0.1$add' to /etc/hosts"
    # /etc/hosts is often a bind mount: append/rewrite in place, never sed -i (rename -> EBUSY)
    echo "127.0.0.1$add $HOSTS_TAG" >> /etc/hosts
    touch "$D/.hosts_added"
  fi
  export SGE_ROOT=$R SGE_CELL=default SGE_QMASTER_PORT=$QPORT SGE_EXECD_PORT=$EPORT
  local H IP RN
  H=$($LIB/gethostname -name) || die "SGE cannot resolve local host name"
  IP=$(getent ahostsv4 "$H" | awk 'NR==1{print $1}')
  RN=$($LIB/gethostbyaddr -name "$IP" 2>/dev/null || true)
  {
    # host_aliases: first name is the canonical SGE name, the rest are aliases of it
    if [ -n "$RN" ] && [ "$RN" != "$H" ]; then echo "$H $RN"; fi
  } > "$C/host_aliases"
  [ -s "$C/host_aliases" ] || rm -f "$C/host_aliases"
  echo "$H" > "$C/act_qmaster"
  echo "$H" > "$D/hostname"

  cat > "$C/bootstrap" <<EOF
# Version: 8.1.9
admin_user              none
default_domain          none
ignore_fqdn             false
spooling_method         berkeleydb
spooling_lib            libspoolb
spooling_params         $D/spool/spooldb
binary_path             /usr/sbin
qmaster_spool_dir       $D/spool/qmaster
security_mode           none
listener_threads        2
worker_threads          2
scheduler_threads       1
EOF
  # login_shells without bash: hsm's jobs run `-S /bin/bash`, and root's ~/.bashrc here (pyenv
  # init, whose rehash lock a killed job can leave behind) is no part of what is tested.
  # global configuration: Debian default has min_uid/min_gid 1000 => root's qsub is rejected:
  #  "Unable to run job: job rejected: your user id 0 is lower than minimum user id 1000 of cluster configuration"
  sed -e "s#^execd_spool_dir .*#execd_spool_dir        $D/spool/execd#" \
      -e 's/^min_uid .*/min_uid                0/' \
      -e 's/^min_gid .*/min_gid                0/' \
      -e 's#^mailer .*#mailer                 /bin/true#' \
      -e 's/^login_shells .*/login_shells           sh,ksh,csh,tcsh/' \
      -e 's/^load_report_time .*/load_report_time       00:00:05/' \
      -e 's/^reporting_params .*/reporting_params       accounting=true reporting=false flush_time=00:00:01 joblog=false sharelog=00:00:00/' \
      /usr/share/gridengine/default-configuration > "$D/cfg/global"

  $LIB/spoolinit berkeleydb libspoolb "$D/spool/spooldb" init >"$D/log/init.log" 2>&1
  $LIB/spooldefaults configuration "$D/cfg/global" >>"$D/log/init.log" 2>&1
  $LIB/spooldefaults complexes /usr/share/gridengine/util/resources/centry >>"$D/log/init.log" 2>&1
  $LIB/spooldefaults usersets /usr/share/gridengine/util/resources/usersets >>"$D/log/init.log" 2>&1
  $LIB/spooldefaults managers root >>"$D/log/init.log" 2>&1

  cat > "$D/env.sh" <<EOF
export SGE_ROOT=$R
export SGE_CELL=default
export SGE_QMASTER_PORT=$QPORT
export SGE_EXECD_PORT=$EPORT
export SGE_HOST=$H
EOF

  # ---- qmaster (SGE_ND=1: stay in the foreground, so \$! is the daemon PID)
  SGE_ND=1 setsid $LIB/sge_qmaster >"$D/log/qmaster.out" 2>&1 </dev/null &
  echo $! > "$D/pids/qmaster.pid"
  WATCH=$D/pids/qmaster.pid wait_for 60 "qmaster answers qconf" qconf -sh
  log "qmaster up (pid $(readpid "$D/pids/qmaster.pid"), host $H, port $QPORT)"

  run_q qconf -as "$H"
  cat > "$D/cfg/exechost" <<EOF
hostname              $H
load_scaling          NONE
complex_values        NONE
user_lists            NONE
xuser_lists           NONE
projects              NONE
xprojects             NONE
usage_scaling         NONE
report_variables      NONE
EOF
  run_q qconf -Ae "$D/cfg/exechost"
  cat > "$D/cfg/smp" <<PE
pe_name            smp
slots              999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    \$pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
PE
  run_q qconf -Ap "$D/cfg/smp"
  # queue: no load threshold (a busy 2-core box would put the queue in alarm state 'a'),
  # no PEs (template lists make/smp/mpi which do not exist)
  cat > "$D/cfg/all.q" <<EOF
qname                 all.q
hostlist              $H
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               smp
rerun                 FALSE
slots                 $SLOTS
tmpdir                /tmp
shell                 /bin/sh
prolog                NONE
epilog                NONE
shell_start_mode      posix_compliant
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
EOF
  run_q qconf -Aq "$D/cfg/all.q"
  # scheduler: run every second (default 15 s), no load adjustments
  qconf -ssconf | sed \
      -e 's/^schedule_interval .*/schedule_interval                 0:0:1/' \
      -e 's/^flush_submit_sec .*/flush_submit_sec                  1/' \
      -e 's/^flush_finish_sec .*/flush_finish_sec                  1/' \
      -e 's/^job_load_adjustments .*/job_load_adjustments              NONE/' \
      -e 's/^load_adjustment_decay_time .*/load_adjustment_decay_time        0:0:0/' > "$D/cfg/sched"
  run_q qconf -Msconf "$D/cfg/sched"

  # ---- execd
  SGE_ND=1 setsid $LIB/sge_execd >"$D/log/execd.out" 2>&1 </dev/null &
  echo $! > "$D/pids/execd.pid"
  # ready when the queue instance has no state flags (no 'u'nknown / 'a'larm)
  WATCH=$D/pids/execd.pid wait_for 60 "queue all.q@$H usable" queue_ok "$H"
  log "execd up (pid $(readpid "$D/pids/execd.pid")); queue all.q@$H has $SLOTS slots"
  log "use: . $D/env.sh"
}

queue_ok() {
  local st
  st=$(qstat -f -q "all.q@$1" | awk -v q="all.q@$1" '$1==q{print $6}')
  qstat -f -q "all.q@$1" | grep -q "^all.q@$1 " && [ -z "$st" ]
}

# ---------------------------------------------------------------- down
down() {
  local D; D=$(realpath -m "$1")
  local qm ex
  qm=$(readpid "$D/pids/qmaster.pid"); ex=$(readpid "$D/pids/execd.pid")
  if pid_alive "$qm" && [ -f "$D/env.sh" ]; then
    load_env "$D"
    qdel -f -u '*' >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 40; i++)); do [ -z "$(qstat -u '*' 2>/dev/null)" ] && break; sleep 0.25; done
  fi
  log "jobs deleted"; local kids=""
  pid_alive "$ex" && kids=$(descendants "$ex")
  stop_pid "$ex" sge_execd 20
  # shepherds/jobs survive an execd shutdown by design: stop them by PID
  local k
  for k in $kids; do pid_alive "$k" && kill -KILL "$k" 2>/dev/null || true; done
  # a clean qmaster shutdown takes ~8-10 s here; `up` recreates the spool anyway, so
  # SGE_QMASTER_STOP_TIMEOUT=1 (then SIGKILL) is safe for fast test teardown
  stop_pid "$qm" sge_qmaster "${SGE_QMASTER_STOP_TIMEOUT:-30}"
  rm -f "$D/pids/qmaster.pid" "$D/pids/execd.pid"
  if [ -f "$D/.hosts_added" ]; then
    grep -v -- "$HOSTS_TAG" /etc/hosts > "$D/hosts.tmp" || true
    cat "$D/hosts.tmp" > /etc/hosts; rm -f "$D/hosts.tmp" "$D/.hosts_added"
  fi
  log "down"
}

status() {
  local D n; D=$(realpath -m "$1")
  for n in qmaster execd; do
    if pid_alive "$(readpid "$D/pids/$n.pid")"; then echo "$n: running (pid $(readpid "$D/pids/$n.pid"))"; else echo "$n: stopped"; fi
  done
}

# ---------------------------------------------------------------- smoke test
job_in_qstat() {  # job_in_qstat JOBID  -> true while any task is pending/running
  qstat -xml | grep -q "<JB_job_number>$1</JB_job_number>"
}

smoke() {
  local D; D=$(realpath -m "$1")
  load_env "$D"
  local W=$D/work S=$D/samples
  rm -rf "$W" "$S"; mkdir -p "$W" "$S"
  cat > "$W/task.sh" <<'EOF'
#!/bin/sh
echo "$SGE_TASK_ID" > "$OUTDIR/task.$SGE_TASK_ID"
sleep 2
EOF
  chmod +x "$W/task.sh"

  # 1. array job 1-5, at most 2 concurrently
  local out J
  out=$(qsub -terse -t 1-5 -tc 2 -N arr -o "$W" -e "$W" -v OUTDIR="$W" "$W/task.sh")
  J=${out%%.*}
  log "submitted array job $out"
  qstat -xml > "$S/qstat-xml-after-submit.xml"
  local i maxrun=0 run saved=0
  for ((i = 0; i < 600; i++)); do
    qstat -xml > "$W/q.xml"
    run=$(grep -c '<state>r</state>' "$W/q.xml" || true)
    [ "$run" -gt "$maxrun" ] && maxrun=$run
    if [ $saved = 0 ] && grep -q '<state>r</state>' "$W/q.xml" && grep -q '<state>qw</state>' "$W/q.xml"; then
      cp "$W/q.xml" "$S/qstat-xml-array-running+pending.xml"; saved=1
    fi
    grep -q "<JB_job_number>$J</JB_job_number>" "$W/q.xml" || break
    sleep 0.2
  done
  job_in_qstat "$J" && die "array job $J did not finish within 120 s"
  [ "$maxrun" -le 2 ] || die "-tc 2 violated: saw $maxrun running tasks"
  local t
  for t in 1 2 3 4 5; do
    [ "$(cat "$W/task.$t" 2>/dev/null)" = "$t" ] || die "task $t output missing/wrong"
  done
  log "array job $J: 5/5 task files OK (max concurrently running seen: $maxrun)"
  qstat -s z -xml > "$S/qstat-xml-finished-zombie.xml" || true

  # 2. accounting (flush_time=1s; poll until all 5 records are there)
  for ((i = 0; i < 100; i++)); do
    [ "$(qacct -j "$J" 2>/dev/null | grep -c '^taskid')" = 5 ] && break; sleep 0.2
  done
  qacct -j "$J" -t 3 > "$S/qacct-j-task3.txt" || die "qacct -j $J -t 3 failed"
  qacct -j "$J" > "$S/qacct-j-all.txt"
  grep -q '^exit_status  *0' "$S/qacct-j-task3.txt" || die "qacct: unexpected exit_status"
  log "qacct -j $J OK ($(grep -c '^taskid' "$S/qacct-j-all.txt") records)"

  # 3. held job -> 'hqw' format sample
  local H
  H=$(qsub -terse -h -N held -o /dev/null -e /dev/null -b y true)
  qstat -xml > "$S/qstat-xml-held.xml"
  qdel "$H" >/dev/null

  # 4. qdel of a running array
  out=$(qsub -terse -t 1-4 -tc 2 -N sleeper -o /dev/null -e /dev/null -b y sleep 300)
  J=${out%%.*}
  for ((i = 0; i < 300; i++)); do
    [ "$(qstat -xml | grep -c '<state>r</state>')" -ge 2 ] && break; sleep 0.2
  done
  qstat -xml > "$S/qstat-xml-array-running.xml"
  grep -q '<state>r</state>' "$S/qstat-xml-array-running.xml" || die "array $J never started"
  qdel "$J" > "$S/qdel-output.txt"
  for ((i = 0; i < 150; i++)); do job_in_qstat "$J" || break; sleep 0.2; done
  job_in_qstat "$J" && die "qdel: job $J still in qstat"
  for ((i = 0; i < 100; i++)); do
    [ "$(qacct -j "$J" 2>/dev/null | grep -c '^taskid')" -ge 2 ] && break; sleep 0.2
  done
  qacct -j "$J" > "$S/qacct-j-deleted.txt" 2>&1 || true
  log "qdel of running array $J OK"
  log "smoke test PASSED; samples in $S"
}

case "${1:-}" in
  install) install_pkgs ;;
  up)     [ $# -eq 2 ] || die "usage: $0 up DIR"; up "$2" ;;
  down)   [ $# -eq 2 ] || die "usage: $0 down DIR"; down "$2" ;;
  test)   [ $# -eq 2 ] || die "usage: $0 test DIR"; smoke "$2" ;;
  status) [ $# -eq 2 ] || die "usage: $0 status DIR"; status "$2" ;;
  *) echo "usage: $0 install | up DIR | test DIR | down DIR | status DIR" >&2; exit 2 ;;
esac
