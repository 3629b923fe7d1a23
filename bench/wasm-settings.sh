#!/usr/bin/env bash
# Measures the wasm build settings (issue 7): cargo opt-level × LTO, wasm-opt flags and wasm SIMD128,
# on size and on the speed of the core's operations in wasm. Edits no file of the repo:
#   1. bench/wasm-core built once per cargo variant (own CARGO_TARGET_DIR under target/wasm-settings/,
#      profile passed as CARGO_PROFILE_RELEASE_OPT_LEVEL / _LTO), wasm-bindgen --target nodejs, then
#      wasm-opt with worker-build's own arguments (-O or -Oz + its --enable-* list + --debuginfo).
#   2. bench/wasm-core/run.mjs on every variant, interleaved (A, B, C, A, B, C, …; ROUNDS rounds),
#      medians per operation; the machine is shared, so only ratios within one run mean anything.
#   3. The real Worker (worker-build, in a scratch copy of HEAD so edge-worker/build and the repo's
#      target dirs are untouched) per opt-level, with wasm-opt switched off in the copy's metadata and
#      run here with worker-build's arguments, so -O and -Oz are sized from the same build.
# Writes $OUT/results.json and prints a markdown table ("build s" is this invocation's build: ≈ 0 when
# cargo had nothing to do; a root-* variant rebuilds only its crate). Usage:
#   bench/wasm-settings.sh                      # everything (≈ 30 min cold on 2 cores)
#   CORE_VARIANTS="3:fat s:fat" WORKER_OPTS="3" ROUNDS=3 bench/wasm-settings.sh
#   SKIP_WORKER=1 / SKIP_CORE=1                 # one half only (results of the other half are kept)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/common.sh"
cd "$ROOT"

OUT=${OUT:-$ROOT/target/wasm-settings}
ROUNDS=${ROUNDS:-3}
# opt-level:lto[:extra]   lto: fat (= true) or thin; extra: simd (RUSTFLAGS +simd128) or root-s / root-z
# (opt-level s/z for the cdylib crate only, `--config profile.release.package.<crate>.opt-level`:
# its own code and, with fat LTO, the optimisation of the merged module; dependencies stay at opt-level).
CORE_VARIANTS=${CORE_VARIANTS:-"3:fat 3:thin s:fat s:thin z:fat z:thin 3:fat:simd 3:fat:root-s"}
# opt-level[:root-s|root-z] for the Worker (fat LTO)
WORKER_OPTS=${WORKER_OPTS:-"3 s z 3:root-s"}
mkdir -p "$OUT"

wasm_opt="$ROOT/node_modules/.bin/wasm-opt"
[ -x "$wasm_opt" ] || die "npm binaryen's wasm-opt is missing ($wasm_opt); run scripts/bootstrap"
command -v wasm-bindgen >/dev/null || die "wasm-bindgen is missing; run scripts/bootstrap"
# What worker-build 0.8.7 passes after the level (src/build/mod.rs, step_run_wasm_opt).
WB_FEATURES=(--enable-mutable-globals --enable-sign-ext --enable-nontrapping-float-to-int
  --enable-bulk-memory --enable-multivalue --enable-reference-types --enable-exception-handling)
run_wasm_opt() { # in out level [extra...]
  local in=$1 out=$2 level=$3; shift 3
  "$wasm_opt" "$in" -o "$out" "$level" "${WB_FEATURES[@]}" "$@" --debuginfo
}
size_of() { stat -c %s "$1"; }
gz_of() { gzip -9 -c "$1" | wc -c; }
secs() { date +%s; }

# Cargo for wasm32 with a given target dir; rest of args go to cargo (same logic as scripts/bench-core).
cargo_wasm() { # target_dir args...
  local dir=$1; shift
  if have_rustup_wasm; then
    CARGO_TARGET_DIR="$dir" cargo "$@" --target wasm32-unknown-unknown
  else
    RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$dir" \
      /usr/bin/cargo "$@" --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort
  fi
}
profile_env() { # opt lto → env assignments for `env`
  local lto=$2; [ "$lto" = fat ] && lto=true
  echo "CARGO_PROFILE_RELEASE_OPT_LEVEL=$1 CARGO_PROFILE_RELEASE_LTO=$lto CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1"
}

meta="$OUT/meta.tsv"   # name  kind  build_s  raw  gz
touch "$meta"
record() { grep -v "^$1	" "$meta" > "$meta.tmp" || true; printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$meta.tmp"; mv "$meta.tmp" "$meta"; }

# ---------------------------------------------------------------------------------------------
timed=()
if [ -z "${SKIP_CORE:-}" ]; then
  n=0; total=$(wc -w <<<"$CORE_VARIANTS")
  for v in $CORE_VARIANTS; do
    n=$((n + 1))
    IFS=: read -r opt lto simd <<<"$v"
    root=""; case "$simd" in root-*) root=${simd#root-}; simd="";; esac
    name="core-o$opt-$lto${simd:+-simd}${root:+-root$root}"
    bname=${name%-root*}  # a root-* variant shares its base variant's target dir (dependencies are identical)
    cfg=(); [ -z "$root" ] || cfg=(--config "profile.release.package.otpkit-bench-wasm.opt-level=\"$root\"")
    log "[core $n/$total] $name: cargo build (opt-level=$opt, lto=$lto${simd:+, +simd128}${root:+, crate otpkit-bench-wasm at $root})"
    t0=$(secs)
    extra=()
    (
      cd bench/wasm-core
      # shellcheck disable=SC2046
      export $(profile_env "$opt" "$lto")
      [ -z "$simd" ] || export RUSTFLAGS="-C target-feature=+simd128"
      cargo_wasm "$ROOT/target/wasm-settings/build-$bname" build -q --release "${cfg[@]}"
    )
    [ -z "$simd" ] || extra=(--enable-simd)
    build_s=$(( $(secs) - t0 ))
    raw="$ROOT/target/wasm-settings/build-$bname/wasm32-unknown-unknown/release/otpkit_bench_wasm.wasm"
    # Variants to time: -O (what worker-build does) for all; for the current setting also
    # no wasm-opt (what scripts/bench-core times) and -Oz.
    levels="-O"; [ "$opt:$lto:$simd:$root" = "3:fat::" ] && levels="none -O -Oz"
    for level in $levels; do
      tv="$name${level/#-/-wo}"; [ "$level" = none ] && tv="$name-nowo"
      rm -rf "${OUT:?}/$tv"; mkdir -p "$OUT/$tv"
      cp bench/wasm-core/run.mjs "$OUT/$tv/"
      wasm-bindgen --target nodejs --out-dir "$OUT/$tv/pkg" "$raw"
      w="$OUT/$tv/pkg/otpkit_bench_wasm_bg.wasm"
      if [ "$level" != none ]; then run_wasm_opt "$w" "$w.tmp" "$level" "${extra[@]}"; mv "$w.tmp" "$w"; fi
      record "$tv" core "$build_s" "$(size_of "$w")" "$(gz_of "$w")"
      note "$tv: $(size_of "$w") bytes, $(gz_of "$w") gz (cargo build ${build_s}s)"
      timed+=("$tv")
    done
  done

  log "timing ${#timed[@]} variants × $ROUNDS rounds, interleaved (bench/wasm-core/run.mjs, ≈ 6 s each)"
  for r in $(seq 1 "$ROUNDS"); do
    for tv in "${timed[@]}"; do
      note "round $r/$ROUNDS: $tv"
      node "$OUT/$tv/run.mjs" > "$OUT/$tv/round$r.json"
    done
  done
fi

# ---------------------------------------------------------------------------------------------
if [ -z "${SKIP_WORKER:-}" ]; then
  src="$OUT/worker-src"
  log "[worker] scratch copy of HEAD in $src (wasm-opt switched off in its edge-worker/Cargo.toml)"
  rm -rf "$src"; mkdir -p "$src"
  git archive HEAD | tar -x -C "$src"
  printf '\n[package.metadata.wasm-pack.profile.release]\nwasm-opt = false\n' >> "$src/edge-worker/Cargo.toml"
  esbuild=$(ls "$ROOT"/node_modules/@esbuild/linux-*/bin/esbuild 2>/dev/null | head -1 || true)
  [ -x "${esbuild:-/nonexistent}" ] || die "esbuild (comes with wrangler) is missing"
  n=0; total=$(wc -w <<<"$WORKER_OPTS")
  for wv in $WORKER_OPTS; do
    n=$((n + 1))
    IFS=: read -r opt root <<<"$wv"; root=${root#root-}
    name="worker-o$opt-fat${root:+-root$root}"
    cfg=(); [ -z "$root" ] || cfg=(--config "profile.release.package.otpkit-worker.opt-level=\"$root\"")
    log "[worker $n/$total] $name: worker-build --release (opt-level=$opt, fat LTO${root:+, crate otpkit-worker at $root}), cold ≈ 3 min"
    t0=$(secs)
    (
      cd "$src"
      export WASM_BINDGEN_BIN="$HOME/.cargo/bin/wasm-bindgen" WASM_OPT_BIN="$wasm_opt" ESBUILD_BIN="$esbuild"
      # shellcheck disable=SC2046
      export $(profile_env "$opt" fat)
      if have_rustup_wasm; then
        CARGO_TARGET_DIR="$ROOT/target/wasm-settings/build-worker-o$opt-fat" worker-build --release edge-worker "${cfg[@]}"
      else
        mkdir -p "$(/usr/bin/rustc --print sysroot)/lib/rustlib/wasm32-unknown-unknown/lib"
        RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
          CARGO_TARGET_DIR="$ROOT/target/wasm-settings/build-worker-o$opt-fat" PATH="/usr/bin:$PATH" \
          worker-build --release edge-worker -Zbuild-std=std,panic_abort "${cfg[@]}"
      fi
    ) > "$OUT/$name.log" 2>&1 || { tail -30 "$OUT/$name.log" >&2; die "$name failed (log: $OUT/$name.log)"; }
    build_s=$(( $(secs) - t0 ))
    cp "$src/edge-worker/build/index_bg.wasm" "$OUT/$name.bindgen.wasm"
    for level in -O -Oz; do
      run_wasm_opt "$OUT/$name.bindgen.wasm" "$OUT/$name${level/#-/-wo}.wasm" "$level"
      f="$OUT/$name${level/#-/-wo}.wasm"
      record "$name${level/#-/-wo}" worker "$build_s" "$(size_of "$f")" "$(gz_of "$f")"
      note "$name${level/#-/-wo}: $(size_of "$f") bytes, $(gz_of "$f") gz (worker-build ${build_s}s without wasm-opt)"
    done
  done
fi

# ---------------------------------------------------------------------------------------------
log "results"
python3 - "$OUT" "$ROUNDS" <<'PY'
import json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
meta = {}
for line in open(os.path.join(out, "meta.tsv")):
    name, kind, b, raw, gz = line.rstrip("\n").split("\t")
    meta[name] = dict(kind=kind, build_s=int(b), raw=int(raw), gz=int(gz))
ops = ["verify_right", "hash", "issue", "render_segments"]
res = {"meta": meta, "core": {}}
for name, m in meta.items():
    if m["kind"] != "core": continue
    runs = [json.load(open(os.path.join(out, name, f"round{r}.json")))
            for r in range(1, rounds + 1) if os.path.exists(os.path.join(out, name, f"round{r}.json"))]
    if runs:
        res["core"][name] = {op: statistics.median(r[op] for r in runs) for op in ops} | {"runs": len(runs)}
json.dump(res, open(os.path.join(out, "results.json"), "w"), indent=1)
base = res["core"].get("core-o3-fat-woO")
print("| variant | raw KB | gz KB | " + " | ".join(f"{op} ns" for op in ops) + " | verify vs current | hash vs current | build s |")
print("|---|---:|---:|" + "---:|" * len(ops) + "---:|---:|---:|")
for name, m in sorted(meta.items()):
    c = res["core"].get(name, {})
    cells = [f"{c[op]:.0f}" if op in c else "–" for op in ops]
    rel = [f"{c[op] / base[op]:.2f}×" if base and op in c else "–" for op in ("verify_right", "hash")]
    print(f"| {name} | {m['raw']/1000:.1f} | {m['gz']/1000:.1f} | " + " | ".join(cells) + f" | {' | '.join(rel)} | {m['build_s']} |")
PY
