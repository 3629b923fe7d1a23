# Sourced by the scripts in scripts/: logging, the repo root, and the wasm32 toolchain choice.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PATH="$HOME/.cargo/bin:$ROOT/node_modules/.bin:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Does rustup have the wasm32 target (a normal laptop)? Otherwise Debian's rustc-web is used.
have_rustup_wasm() {
  rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown
}

# Runs cargo for wasm32-unknown-unknown with whichever toolchain this machine has.
#   wasm_cargo STD build|test ARGS...   STD = "std" (std,panic_abort) or "core" (core,alloc: the no_std proof)
wasm_cargo() {
  local std=$1; shift
  if have_rustup_wasm; then
    cargo "$@" --target wasm32-unknown-unknown
  else
    local build_std="std,panic_abort"
    [ "$std" = core ] && build_std="core,alloc"
    RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
      CARGO_TARGET_DIR="$ROOT/target/wasm-debian" \
      /usr/bin/cargo "$@" --target wasm32-unknown-unknown -Zbuild-std="$build_std"
  fi
}

# The wasm-bindgen version pinned in Cargo.lock.
locked_version() {
  awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"
}
