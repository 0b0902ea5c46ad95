#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, integration and end-to-end tests.
#
# Run as root, it first installs what the tests need (idempotently); run as another user it
# installs nothing, and tests whose prerequisites are missing skip with a printed reason.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

# apt-get install, and once more after `apt-get update` when the package lists are missing or
# stale (a fresh machine has none).
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1 && return 0
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ "$(id -u)" = 0 ]; then
  # hydra-core: the Hydra grammar test checks our rendering against Hydra's own parser.
  if ! python3 -c 'import hydra' 2>/dev/null; then
    say "installing hydra-core (for the Hydra override grammar test)"
    python3 -m pip install --quiet --disable-pip-version-check 'hydra-core==1.3.8' \
      || say "could not install hydra-core; the Hydra grammar test will skip"
  fi
  # pandas: the results test reads `sweep results --format csv` with pandas.read_csv, as a
  # researcher would (it checks with Python's csv module alone when pandas is missing).
  if ! python3 -c 'import pandas' 2>/dev/null; then
    say "installing pandas (for reading the results CSV as a researcher would)"
    python3 -m pip install --quiet --disable-pip-version-check pandas \
      || say "could not install pandas; the results test checks its CSV with the csv module only"
  fi
  # iptables: the fault suite drops a share of one namespace host's packets with it.
  if ! command -v iptables >/dev/null; then
    say "installing iptables (for the packet-loss fault test)"
    apt_install iptables \
      || say "could not install iptables; the packet-loss test will skip"
  fi
  # OpenSSH's server for the `agent deploy` and ssh transport tests (an sshd per
  # network-namespace host, started and stopped by each test through tests/ssh-netns.sh).
  if [ ! -x /usr/sbin/sshd ]; then
    say "installing openssh-server (for the agent deploy tests)"
    tests/ssh-netns.sh install || say "could not install openssh-server; the agent deploy tests will skip"
  fi
  # busybox-static: the commands the portable agent's tasks run inside its empty chroot.
  if ! [ -x /bin/busybox ]; then
    say "installing busybox-static (for the portable agent's chroot test)"
    apt_install busybox-static \
      || say "could not install busybox-static; the portable agent test will skip"
  fi
  # Chromium: the report test opens a sweep's report.html in headless Chromium.
  if ! command -v chromium >/dev/null; then
    say "installing chromium (for the report's browser test)"
    apt_install chromium \
      || say "could not install chromium; the report's browser test will fail as root"
  fi
  # Grid Engine's client first: it replaces Debian's Slurm qsub wrappers, of which
  # tests/slurm.sh then keeps a private copy for the PBS tests.
  if [ -z "${HSM_TEST_SGE_ENV:-}" ]; then
    tests/sge.sh install >/dev/null 2>&1 || say "could not install Grid Engine; its tests will skip"
  fi
  # A single-node Slurm (with Debian's qsub/qstat/qdel wrappers) for the Slurm/PBS backend
  # tests; MaxArraySize 10 so that chunking into several arrays is exercised. Stopped by its
  # recorded PIDs when this script exits, however it exits.
  stop_clusters=""
  if [ -z "${SLURM_CONF:-}" ]; then
    slurm_dir=$(mktemp -d "${TMPDIR:-/tmp}/hsm-test-slurm.XXXXXX")
    stop_clusters='tests/slurm.sh down "$slurm_dir" >/dev/null 2>&1 || true'
    trap "$stop_clusters" EXIT
    say "starting a single-node Slurm for the Slurm/PBS tests ($slurm_dir)"
    if HSM_SLURM_MAX_ARRAY=10 tests/slurm.sh up "$slurm_dir" >"$slurm_dir.log" 2>&1; then
      export SLURM_CONF="$slurm_dir/slurm.conf"
      export HSM_TEST_SLURM_CONF="$SLURM_CONF"
    else
      say "could not start Slurm (see $slurm_dir.log); the Slurm/PBS tests will skip"
      cat "$slurm_dir.log" >&2 || true
    fi
  fi
  # A second single-node Slurm, with accounting (slurmdbd + MariaDB) and a QOS limit of 8
  # queued jobs per user, for the job-cap test; its own ports, munge and directories.
  if [ -z "${HSM_TEST_SLURM_QOS_CONF:-}" ]; then
    qos_dir=$(mktemp -d "${TMPDIR:-/tmp}/hsm-test-slurm-qos.XXXXXX")
    stop_clusters="tests/slurm-qos.sh down \"\$qos_dir\" >/dev/null 2>&1 || true; $stop_clusters"
    trap "$stop_clusters" EXIT
    say "starting a single-node Slurm with accounting for the job-cap test ($qos_dir)"
    if tests/slurm-qos.sh up "$qos_dir" >"$qos_dir.log" 2>&1; then
      export HSM_TEST_SLURM_QOS_CONF="$qos_dir/etc/slurm.conf"
    else
      say "could not start it (see $qos_dir.log); the job-cap test against a real QOS limit will skip"
      tail -20 "$qos_dir.log" >&2 || true
    fi
  fi
  # A single-node Grid Engine for the Grid Engine backend tests (its qsub/qstat replace Debian's
  # Slurm wrappers in /usr/bin: tests/slurm.sh keeps a copy of those for the PBS tests).
  if [ -z "${HSM_TEST_SGE_ENV:-}" ]; then
    sge_dir=$(mktemp -d "${TMPDIR:-/tmp}/hsm-test-sge.XXXXXX")
    stop_clusters="SGE_QMASTER_STOP_TIMEOUT=1 tests/sge.sh down \"\$sge_dir\" >/dev/null 2>&1 || true; $stop_clusters"
    trap "$stop_clusters" EXIT
    say "starting a single-node Grid Engine for the Grid Engine tests ($sge_dir)"
    if tests/sge.sh up "$sge_dir" >"$sge_dir.log" 2>&1; then
      export HSM_TEST_SGE_ENV="$sge_dir/env.sh"
    else
      say "could not start Grid Engine (see $sge_dir.log); the Grid Engine tests will skip"
      tail -20 "$sge_dir.log" >&2 || true
    fi
  fi
else
  say "not root: installing nothing; tests whose prerequisites are missing will skip"
fi

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "cargo test"
# --no-fail-fast: one failing test binary must not hide the results of the others; cargo
# still exits non-zero when any test failed.
status=0
cargo test --workspace --all-targets --no-fail-fast || status=$?
# The portable agent (tools/build-agent.sh: zig, glibc 2.17, dist profile; ~3 min of release
# build) serving a sweep from an empty chroot. Root only; skips with a reason otherwise.
say "portable agent in a chroot (tests/portable_agent.sh)"
tests/portable_agent.sh || status=1
exit "$status"
