#!/usr/bin/env bash
# The portable agent (tools/build-agent.sh) serves a sweep from an otherwise empty chroot.
#
# The chroot holds the agent binary, the glibc files it names (its ELF interpreter and NEEDED
# libraries, copied from this host: every glibc system has them, and the build checks that it
# names nothing else and no symbol newer than GLIBC_2.17), /proc and /dev (bind mounts in a
# private mount namespace, gone when the agent exits), an empty /tmp, and /bin/busybox (static)
# as the tasks' command. No /etc, no shell, no /usr. A real coordinator (debug build) runs a
# 12-task sweep through it over QUIC on 127.0.0.1 and must get every task's result file back.
# That the binary runs on an actual glibc 2.17 system is not tested here (no such system); the
# symbol-version check in the build script is what guarantees it.
#
# Needs root (chroot, mounts); skips with a printed reason otherwise, or when the zig toolchain
# cannot be installed (tools/build-agent.sh exit 3). Everything it starts is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'portable_agent: %s\n' "$*"; }
skip() { say "SKIP: $*"; exit 0; }
fail() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || skip "needs root (chroot and bind mounts)"
command -v unshare >/dev/null || skip "unshare (util-linux) not found"
CARGO=${CARGO:-cargo}

# 1. The binary under test, built as `agent deploy` ships it (bounded: ~3 min on 2 cores here).
set +e
CARGO=$CARGO timeout 1500 tools/build-agent.sh
rc=$?
set -e
[ "$rc" = 3 ] && skip "the portable build's toolchain is not available here (see above)"
[ "$rc" = 0 ] || fail "tools/build-agent.sh exited with $rc"
target_dir=${CARGO_TARGET_DIR:-target}
agent=$target_dir/dist/hsm-agent-x86_64-linux
[ "$(uname -m)" = x86_64 ] || skip "the chroot run needs an x86_64 host"

# The tasks' command inside the chroot: a static busybox (Debian's busybox-static).
busybox=""
for candidate in /bin/busybox /usr/bin/busybox; do
  if [ -x "$candidate" ] && ! grep -q 'interpreter:' <<<"$(readelf -l "$candidate" 2>/dev/null)"; then
    busybox=$candidate
    break
  fi
done
[ -n "$busybox" ] || skip "no static busybox for the tasks to run (apt-get install busybox-static)"

$CARGO build --quiet -p hsm-coordinator -p hsm-agent
coordinator=$PWD/$target_dir/debug/hsm-coordinator

# The build's check must refuse what a plain `cargo build` makes on this host: Rust's std
# links __libc_start_main@GLIBC_2.34 on a glibc 2.34+ host.
# No `| head` under pipefail: a writer cut off by SIGPIPE fails the pipeline, and set -e then
# ends the script without a word.
host_glibc=$(ldd --version 2>/dev/null | awk 'NR == 1 {print $NF}')
if [ "$(printf '%s\n2.34\n' "$host_glibc" | sort -V | awk 'NR == 1')" = 2.34 ]; then
  if out=$(tools/build-agent.sh --check "$target_dir/debug/hsm-agent" 2>&1); then
    fail "the glibc check passed a host-linked agent (glibc $host_glibc): $out"
  fi
  grep -q 'newer than GLIBC_2.17' <<<"$out" || fail "unexpected refusal: $out"
  say "the check refuses a host-linked agent: $out"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/hsm-portable.XXXXXX")
root=$work/root
agent_pid=""
cleanup() {
  if [ -n "$agent_pid" ]; then
    kill "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
  fi
  # The mounts live in the agent's own mount namespace and vanish with it; refuse to delete
  # anything that still looks mounted all the same.
  if grep -q " $root/" /proc/self/mounts; then
    say "leaving $work in place: something is still mounted under it"
  else
    rm -rf --one-file-system "$work"
  fi
}
trap cleanup EXIT

# 2. The chroot: the binary, its glibc files, busybox, and empty /proc /dev /tmp.
mkdir -p "$root/proc" "$root/dev" "$root/tmp" "$root/bin"
chmod 1777 "$root/tmp"
cp "$agent" "$root/hsm-agent"
cp "$busybox" "$root/bin/busybox"
interp=$(readelf -l "$agent" | sed -n 's/.*interpreter: \(.*\)\]/\1/p')
[ -n "$interp" ] || fail "$agent names no ELF interpreter"
libs=$(ldd "$agent" | awk '$2 == "=>" && $3 ~ /^\// {print $3}')
for file in "$interp" $libs; do
  mkdir -p "$root$(dirname "$file")"
  cp -L "$file" "$root$file"
done
say "chroot contents: $(cd "$root" && find . -type f | sort | tr '\n' ' ')"

# Runs "$@" in the chroot with an empty environment but PATH=/bin, in a private mount namespace
# (the bind mounts are never visible outside it). Each step execs the next, so the PID of the
# whole command is the PID of the program run in the chroot.
chroot_bin=$(command -v chroot)
mount_ns='mount --bind /proc "$0/proc" && mount --bind /dev "$0/dev" && exec "$1" "$0" "${@:2}"'
in_chroot() {
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin unshare --mount --propagation private -- \
    bash -c "export PATH=/bin; $mount_ns" "$root" "$chroot_bin" "$@"
}

# 3. A coordinator identity, authorized by the agent (both sides as a user would run them).
export HSM_HOME=$work/home
fingerprint=$("$coordinator" identity)
in_chroot /hsm-agent init --state-dir /tmp/state >/dev/null
in_chroot /hsm-agent authorize "$fingerprint" --state-dir /tmp/state >/dev/null
# No /tmp/project: the sweep's push creates it.

mkfifo "$work/agent.out"
# Not through the function: a function in the background runs in a subshell, whose PID is not
# the agent's.
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin unshare --mount --propagation private -- \
  bash -c "export PATH=/bin; $mount_ns" "$root" "$chroot_bin" \
  /hsm-agent serve --listen 127.0.0.1:0 --slots 2 --state-dir /tmp/state --work-dir /tmp/work \
  >"$work/agent.out" 2>"$work/agent.err" &
agent_pid=$!
exec 3<"$work/agent.out"
read -r -t 60 line1 <&3 || fail "the agent printed no address in 60 s: $(cat "$work/agent.err")"
read -r -t 60 line2 <&3 || fail "the agent printed no fingerprint: $(cat "$work/agent.err")"
address=${line1#listening on }
agent_fp=${line2#fingerprint }
say "agent in the chroot: pid $agent_pid, $address, $agent_fp"
# Keep draining its stdout so that the agent never blocks on a full pipe.
cat <&3 >/dev/null &

# 4. A sweep through it: each task writes its parameters into a result file, which must come
# back to the coordinator's side.
project=$work/project
mkdir -p "$project/.hsm" "$project/sweeps"
cat >"$project/.hsm/config.yaml" <<EOF
command:
  template: ['/bin/busybox', 'sh', '-c', 'echo "\$1" > "\$HSM_OUTPUT_DIR/out.txt"', 'sh', '{overrides}']
sources:
  chroot:
    type: agent
    address: "$address"
    fingerprint: "$agent_fp"
    project_dir: /tmp/project
    # The chroot starts without the project: the first sweep sends it (and the agent in the
    # chroot writes it).
    sync: push
EOF
cat >"$project/sweeps/sweep.yaml" <<EOF
sweep:
  grid:
    i: {range: [0, 12]}
EOF
timeout 600 "$coordinator" -q -C "$project" sweep run --sources chroot \
  || fail "sweep run through the chrooted agent failed (agent log: $(tail -5 "$work/agent.err"))"

tasks_dir=$(echo "$project"/sweeps/outputs/*/tasks)
[ -d "$tasks_dir" ] || fail "no task directories under $project/sweeps/outputs"
count=0
for i in $(seq 0 11); do
  file=$(grep -lx "i=$i" "$tasks_dir"/task_*/results/out.txt 2>/dev/null | awk 'NR == 1')
  [ -n "$file" ] || fail "no result file with i=$i came back"
  count=$((count + 1))
done
[ -f "$root/tmp/project/sweeps/sweep.yaml" ] \
  || fail "the project was not pushed into the chroot's /tmp/project"
# The tasks ran under the chrooted agent: their directories are in the chroot's /tmp/work.
[ -n "$(find "$root/tmp/work" -name "task_*" -print -quit)" ] \
  || fail "no task directories in the chroot's /tmp/work"
status=$("$coordinator" -C "$project" sweep status --json)
grep -q '"completed": *12' <<<"$status" || fail "sweep status is not 12 completed: $status"
say "PASS: $count tasks ran in the chroot and their results came back ($(stat -c %s "$agent") byte agent)"
