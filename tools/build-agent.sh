#!/usr/bin/env bash
# Builds the portable hsm-agent that `hsm-coordinator agent deploy` copies to other hosts:
# Linux, linked against glibc 2.17 symbols at most (CentOS 7, RHEL 8, every newer distro), the
# size-optimised `dist` profile (stripped, LTO), written to target/dist/hsm-agent-<arch>-linux.
#
#   tools/build-agent.sh                  # x86_64
#   tools/build-agent.sh --arch aarch64   # 64-bit ARM (needs `rustup target add aarch64-unknown-linux-gnu`)
#   tools/build-agent.sh --check FILE     # only the checks below, on any agent binary
#
# zig is the linker (it carries glibc stubs of any version, so no old sysroot is needed):
# installs the pinned ziglang (PyPI) and cargo-zigbuild (crates.io) when missing, unless
# --no-install. Exit codes: 0 built and checked; 1 build or check failed; 2 bad usage;
# 3 the toolchain cannot be had here (tests skip on 3). CARGO=... runs another cargo (a wrapper).
set -euo pipefail
cd "$(dirname "$0")/.."

ZIG_VERSION=0.14.1
CARGO_ZIGBUILD_VERSION=0.24.1
GLIBC_MAX=2.17
# Refuse a binary bigger than this: it is copied over SSH to every host on each upgrade.
MAX_BYTES=$((20 * 1024 * 1024))
# What the binary may load: glibc's own libraries, present on every glibc system.
ALLOWED_NEEDED="libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libgcc_s.so.1 ld-linux-x86-64.so.2 ld-linux-aarch64.so.1"

CARGO=${CARGO:-cargo}
arch=x86_64
install=1
check_only=""

say() { printf 'build-agent: %s\n' "$*"; }
unavailable() { say "cannot build here: $*"; exit 3; }
fail() { say "FAILED: $*"; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=${2:?--arch needs x86_64 or aarch64}; shift 2 ;;
    --arch=*) arch=${1#--arch=}; shift ;;
    --no-install) install=0; shift ;;
    --check) check_only=${2:?--check needs a file}; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) say "unknown argument $1 (see --help)"; exit 2 ;;
  esac
done
case "$arch" in
  x86_64|amd64) arch=x86_64; machine="X86-64" ;;
  aarch64|arm64) arch=aarch64; machine="AArch64" ;;
  *) say "--arch $arch: agents are built for x86_64 and aarch64"; exit 2 ;;
esac
triple=$arch-unknown-linux-gnu

# The checks a binary must pass to be what `agent deploy` copies: the right machine, only
# glibc's own libraries, no glibc symbol newer than GLIBC_MAX, not over MAX_BYTES. Sets
# `needed`, `glibc`, `bytes` and `version`.
check_binary() {
  local built=$1 lib highest
  command -v readelf >/dev/null || fail "readelf not found (install binutils): the checks below need it"
  readelf -h "$built" | grep -q "Machine:.*$machine" || fail "$built is not a $machine binary"
  needed=$(readelf -d "$built" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
  for lib in $needed; do
    case " $ALLOWED_NEEDED " in
      *" $lib "*) ;;
      *) fail "$built needs $lib, which a login node may not have (only glibc's own libraries are allowed)" ;;
    esac
  done
  # The highest glibc symbol version the binary asks for (what `objdump -T | grep GLIBC_` shows,
  # read from the version-needs section so that it works for any architecture).
  glibc=$(readelf -V "$built" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
  [ -n "$glibc" ] || fail "no GLIBC_ symbol versions found in $built (not a glibc binary?)"
  highest=$(printf '%s\n%s\n' "$glibc" "$GLIBC_MAX" | sort -V | tail -1)
  [ "$highest" = "$GLIBC_MAX" ] || fail "$built needs GLIBC_$glibc, newer than GLIBC_$GLIBC_MAX"
  bytes=$(stat -c %s "$built")
  [ "$bytes" -le "$MAX_BYTES" ] || fail "$built is $bytes bytes, over the $MAX_BYTES limit"
  if [ "$arch" = "$(uname -m)" ]; then
    version=$("$built" --version) || fail "$built --version did not run"
  else
    version="(not run: built for $arch on $(uname -m))"
  fi
}

if [ -n "$check_only" ]; then
  [ -f "$check_only" ] || { say "--check $check_only: no such file"; exit 2; }
  check_binary "$check_only"
  say "OK: $check_only ($version): $bytes bytes, needs ${needed% }, highest GLIBC_$glibc"
  exit 0
fi

# 1. The Rust standard library for the target.
sysroot=$(rustc --print sysroot)
if [ ! -d "$sysroot/lib/rustlib/$triple/lib" ]; then
  if [ "$install" = 1 ] && command -v rustup >/dev/null; then
    say "installing the Rust standard library for $triple (rustup target add)"
    rustup target add "$triple" || unavailable "rustup target add $triple failed (no access to the Rust distribution server?)"
  else
    unavailable "no Rust standard library for $triple: run \`rustup target add $triple\`"
  fi
fi

# 2. zig, the linker: on PATH, or the ziglang Python package (which cargo-zigbuild finds too).
if command -v zig >/dev/null; then
  zig_version=$(zig version)
elif python3 -c 'import ziglang' 2>/dev/null; then
  zig_version=$(python3 -m ziglang version)
elif [ "$install" = 1 ]; then
  say "installing zig $ZIG_VERSION (pip install ziglang==$ZIG_VERSION)"
  python3 -m pip install --quiet --disable-pip-version-check "ziglang==$ZIG_VERSION" \
    || unavailable "pip install ziglang==$ZIG_VERSION failed (no PyPI access?); install zig $ZIG_VERSION from ziglang.org instead"
  zig_version=$(python3 -m ziglang version)
else
  unavailable "zig not found (pip install ziglang==$ZIG_VERSION)"
fi
[ "$zig_version" = "$ZIG_VERSION" ] || say "note: zig $zig_version, tested with $ZIG_VERSION"

# 3. cargo-zigbuild, which runs cargo with zig as the C compiler and linker.
if ! command -v cargo-zigbuild >/dev/null; then
  if [ "$install" = 1 ]; then
    say "installing cargo-zigbuild $CARGO_ZIGBUILD_VERSION (cargo install)"
    $CARGO install --locked --quiet cargo-zigbuild --version "$CARGO_ZIGBUILD_VERSION" \
      || unavailable "cargo install cargo-zigbuild failed (no crates.io access?)"
  else
    unavailable "cargo-zigbuild not found (cargo install --locked cargo-zigbuild --version $CARGO_ZIGBUILD_VERSION)"
  fi
fi

# 4. Build. The `.2.17` suffix makes zig link against glibc 2.17's symbol versions.
say "building hsm-agent for $triple, glibc $GLIBC_MAX, profile dist (zig $zig_version)"
started=$(date +%s)
$CARGO zigbuild --profile dist -p hsm-agent --target "$triple.$GLIBC_MAX" \
  || fail "cargo zigbuild --profile dist -p hsm-agent --target $triple.$GLIBC_MAX"
seconds=$(( $(date +%s) - started ))
target_dir=${CARGO_TARGET_DIR:-target}
built=$target_dir/$triple/dist/hsm-agent
[ -f "$built" ] || fail "$built was not produced"
check_binary "$built"

out_dir=$target_dir/dist
out=$out_dir/hsm-agent-$arch-linux
mkdir -p "$out_dir"
cp "$built" "$out.tmp"
mv -f "$out.tmp" "$out"

say "built $out"
say "  version:        $version"
say "  size:           $bytes bytes ($((bytes / 1024 / 1024)) MiB)"
say "  sha256:         $(sha256sum "$out" | cut -d' ' -f1)"
say "  needs:          ${needed% } (interpreter $(readelf -l "$out" | sed -n 's/.*interpreter: \(.*\)\]/\1/p'))"
say "  highest glibc:  GLIBC_$glibc (limit GLIBC_$GLIBC_MAX)"
say "  build time:     ${seconds}s"
