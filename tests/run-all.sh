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
else
  say "not root: installing nothing; tests whose prerequisites are missing will skip"
fi

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "cargo test"
cargo test --workspace --all-targets
