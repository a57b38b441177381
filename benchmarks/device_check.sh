#!/usr/bin/env bash
# The accelerator check: the kernel tests on the device, then bench-corpus bakes on the device
# against the same bakes on the host's CPUs, in one run of under 8 minutes.
#
#   benchmarks/device_check.sh [--wheels DIR] [--corpus-gen PATH] [--out DIR] [--quick] [--allow-cpu]
#
# Run it from the repository root on a machine with a GPU. It needs Python >= 3.11 and JAX with
# a GPU backend; when `jax.devices()` shows none it installs the CUDA wheel
# (`pip install "jax[cuda13]"`, or DATAKILN_JAX_EXTRA=cuda12 for older drivers). On a machine
# without a package index, pass --wheels DIR: a folder of wheels for what the machine lacks
# (zarr, numcodecs, dask, distributed, soundfile, librosa, ...), installed with --no-index.
# --corpus-gen names the bench corpus generator (default ../shared/bench/make_corpus.py).
# --quick makes everything small (to try the script itself); --allow-cpu lets it run without a
# GPU (the "device" figures are then CPU figures: for trying the script only).
#
# Output, in --out (default /tmp/datakiln-device-check): env.txt, kernels.log, and one JSON file
# per benchmark and platform (images64-gpu.json, images64-cpu.json, ...), plus summary.txt.
# Each step runs even when an earlier one failed; the exit status is 1 if any step failed.
set -uo pipefail

wheels="" ; gen="../shared/bench/make_corpus.py" ; out="${OUT_DIR:-/tmp/datakiln-device-check}"
quick=0 ; allow_cpu=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheels) wheels="$2"; shift 2 ;;
    --corpus-gen) gen="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --allow-cpu) allow_cpu=1; shift ;;
    *) echo "device_check: unknown argument $1" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python3}"
mkdir -p "$out"
failed=0
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }
note_failure() { echo "!!! step failed: $1"; failed=1; echo "FAILED: $1" >> "$out/summary.txt"; }
: > "$out/summary.txt"

# Several bake processes share one GPU: take memory as needed, not 75% each up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
for v in OPENBLAS_NUM_THREADS OMP_NUM_THREADS MKL_NUM_THREADS; do export "$v=${!v:-1}"; done

step "install"
site="$out/site"
if [[ -n "$wheels" ]]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$wheels"/*.whl || note_failure "install wheels"
  export PYTHONPATH="$site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
elif ! "$PY" -c "import datakiln" 2>/dev/null; then
  "$PY" -m pip install -q -e ".[dev]" || note_failure "pip install -e .[dev]"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import jax, sys; sys.exit(0 if any(d.platform == 'gpu' for d in jax.devices()) else 1)" 2>/dev/null \
   && [[ $allow_cpu == 0 ]]; then
  "$PY" -m pip install -q -U "jax[${DATAKILN_JAX_EXTRA:-cuda13}]" || note_failure "install CUDA JAX"
fi

step "environment"
"$PY" - <<'EOF' | tee "$out/env.txt"
import os, platform, jax, jaxlib, numpy, PIL, zarr
print("python", platform.python_version(), "|", platform.machine(), "|", os.cpu_count(), "cpus")
print("jax", jax.__version__, "jaxlib", jaxlib.__version__, "numpy", numpy.__version__,
      "pillow", PIL.__version__, "zarr", zarr.__version__)
print("devices", jax.devices())
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
  --format=csv,noheader | tee -a "$out/env.txt"
if "$PY" -c "import jax, sys; sys.exit(0 if any(d.platform == 'gpu' for d in jax.devices()) else 1)"; then
  dev=cuda
elif [[ $allow_cpu == 1 ]]; then
  dev=cpu; echo "no GPU: --allow-cpu, so the device figures are CPU figures"
else
  note_failure "no GPU visible to JAX"; exit 1
fi

step "kernel tests on $dev (resize vs Pillow, mel vs librosa, tokenizers)"
JAX_PLATFORMS=$dev "$PY" -m pytest -q -p no:cacheprovider tests/etl/kernels 2>&1 \
  | tee "$out/kernels.log" | tail -25 || note_failure "kernel tests on $dev"

step "bench corpus"
corpus="$out/corpus"
if [[ $quick == 1 ]]; then jpegs=200; wavs=40; lines=2000; runs=1; else jpegs=2000; wavs=400; lines=20000; runs=3; fi
if [[ -f "$gen" ]]; then
  "$PY" "$gen" --out "$corpus" --jpegs $jpegs --pngs 0 --wavs $wavs --lines $lines \
    || note_failure "corpus"
else
  note_failure "corpus generator $gen not found"
fi

for platform in "$dev" cpu; do
  tag=$([[ $platform == cuda ]] && echo gpu || echo cpu)
  for size in 64 256; do
    step "image bake at $size px on $platform"
    DATAKILN_BENCH_RESULTS="$out/images$size-$tag" JAX_PLATFORMS=$platform \
      "$PY" benchmarks/bench_bake_images.py --corpus "$corpus" --runs $runs --size $size \
      && cp "$out/images$size-$tag/bench_bake_images.json" "$out/images$size-$tag.json" \
      || note_failure "image bake $size on $platform"
  done
  step "text and audio bakes on $platform"
  DATAKILN_BENCH_RESULTS="$out/text-audio-$tag" JAX_PLATFORMS=$platform \
    "$PY" benchmarks/bench_bake_text_audio.py --corpus "$corpus" \
    --runs $runs --json "$out/text-audio-$tag.json" > "$out/text-audio-$tag.log" 2>&1 \
    || note_failure "text/audio bakes on $platform"
  tail -30 "$out/text-audio-$tag.log"
  [[ $platform == cpu ]] && break
done

step "summary"
"$PY" - "$out" <<'EOF' | tee -a "$out/summary.txt"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def load(name):
    p = out / name
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None
for size in (64, 256):
    g, c = load(f"images{size}-gpu.json"), load(f"images{size}-cpu.json")
    if g and c:
        gb, cb = g["medians"]["bake"], c["medians"]["bake"]
        print(f"image bake {size}px: device {gb:.0f}/s, cpu {cb:.0f}/s, device/cpu "
              f"{gb / cb:.2f}x, device vs 1-thread draft {g['ratios']['bake_vs_draft']:.2f}x")
g, c = load("text-audio-gpu.json"), load("text-audio-cpu.json")
if g and c:
    print("text/audio, device:", json.dumps({"medians": g["medians"], "ratios": g["ratios"]}))
    print("text/audio, cpu:   ", json.dumps({"medians": c["medians"], "ratios": c["ratios"]}))
EOF
rm -rf "$corpus" "$site"
echo; echo "device_check: $([[ $failed == 0 ]] && echo ok || echo 'some steps FAILED') (figures in $out)"
exit $failed
