#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, integration and end-to-end tests.
#
# Run as root, it first installs what the tests need (idempotently); run as another user it
# installs nothing, and tests whose prerequisites are missing skip with a printed reason.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

if [ "$(id -u)" = 0 ]; then
  # hydra-core: the Hydra grammar test checks our rendering against Hydra's own parser.
  if ! python3 -c 'import hydra' 2>/dev/null; then
    say "installing hydra-core (for the Hydra override grammar test)"
    python3 -m pip install --quiet --disable-pip-version-check 'hydra-core==1.3.8' \
      || say "could not install hydra-core; the Hydra grammar test will skip"
  fi
  # iptables: the fault suite drops a share of one namespace host's packets with it.
  if ! command -v iptables >/dev/null; then
    say "installing iptables (for the packet-loss fault test)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >/dev/null \
      || say "could not install iptables; the packet-loss test will skip"
  fi
  # openssh-server: the ssh transport test (cli_ssh_netns) runs sshd in network namespaces,
  # started and stopped by tests/netns-sshd.sh; no system sshd is started (policy-rc.d).
  if [ ! -x /usr/sbin/sshd ]; then
    say "installing openssh-server (for the ssh transport test)"
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      openssh-server openssh-client >/dev/null \
      || say "could not install openssh-server; the ssh transport test will skip"
    [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  fi
  # A single-node Slurm (with Debian's qsub/qstat/qdel wrappers) for the Slurm/PBS backend
  # tests; MaxArraySize 10 so that chunking into several arrays is exercised. Stopped by its
  # recorded PIDs when this script exits, however it exits.
  if [ -z "${SLURM_CONF:-}" ]; then
    slurm_dir=$(mktemp -d "${TMPDIR:-/tmp}/hsm-test-slurm.XXXXXX")
    trap 'tests/slurm.sh down "$slurm_dir" >/dev/null 2>&1 || true' EXIT
    say "starting a single-node Slurm for the Slurm/PBS tests ($slurm_dir)"
    if HSM_SLURM_MAX_ARRAY=10 tests/slurm.sh up "$slurm_dir" >"$slurm_dir.log" 2>&1; then
      export SLURM_CONF="$slurm_dir/slurm.conf"
      export HSM_TEST_SLURM_CONF="$SLURM_CONF"
    else
      say "could not start Slurm (see $slurm_dir.log); the Slurm/PBS tests will skip"
      cat "$slurm_dir.log" >&2 || true
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
cargo test --workspace --all-targets --no-fail-fast
