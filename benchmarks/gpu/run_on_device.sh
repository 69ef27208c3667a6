#!/usr/bin/env bash
# One rehearsed check of the CUDA engine on a fresh GPU machine (issue #20): build the package
# for sm_90 (H100/H200) from the source tree, run tests/gpu, the CUDA engine under
# compute-sanitizer on a small case, and benchmarks/bench_ad_gpu.py (small sizes first, then
# N = 1e5 and 1e6 while the time budget lasts). Logs go to LOGDIR; the whole run stays under
# ALIGNSCOPE_GPU_BUDGET seconds (default 450, so a failed first run leaves time for a second
# inside a 15-minute lease).
#
#   benchmarks/gpu/run_on_device.sh [--dry-run | --rehearse] [--wheels DIR] LOGDIR
#
#   --dry-run   print the steps, their commands and time limits; run nothing.
#   --rehearse  run every step that needs no GPU (environment, wheel check, import, pytest
#               collection of tests/gpu, the benchmark's argument handling) with $PYTHON, and
#               skip the build, the tests' run and the sanitizer: for a machine without one.
#   --wheels    folder of wheels to install first (default .wheels): the packages the GPU
#               machine's image lacks, fetched on a machine with internet (benchmarks/gpu/
#               README.md says which and how).
#
# Environment: PYTHON (default python3), ALIGNSCOPE_GPU_BUDGET (seconds), SITE (install target,
# default /tmp/alignscope-site), CUDA_ARCH (default 90-real).
set -uo pipefail

usage() {
    echo "usage: $0 [--dry-run | --rehearse] [--wheels DIR] LOGDIR" >&2
    exit 2
}

MODE=full
WHEELS=.wheels
LOGDIR=
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) MODE=dry ;;
        --rehearse) MODE=rehearse ;;
        --wheels)
            [ $# -ge 2 ] || { echo "run_on_device.sh: --wheels needs a folder" >&2; usage; }
            WHEELS=$2
            shift
            ;;
        -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
        -*) echo "run_on_device.sh: unknown option $1" >&2; usage ;;
        *)
            [ -z "$LOGDIR" ] || { echo "run_on_device.sh: one LOGDIR only, got '$LOGDIR' and '$1'" >&2; usage; }
            LOGDIR=$1
            ;;
    esac
    shift
done
[ -n "$LOGDIR" ] || { echo "run_on_device.sh: LOGDIR is required (the folder for the logs)" >&2; usage; }

BUDGET=${ALIGNSCOPE_GPU_BUDGET:-450}
case "$BUDGET" in
    '' | *[!0-9]*) echo "run_on_device.sh: ALIGNSCOPE_GPU_BUDGET must be whole seconds, got '$BUDGET'" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/alignscope-site}
CUDA_ARCH=${CUDA_ARCH:-90-real}
RESERVE=10 # seconds kept back for the summary
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO" || exit 2

if [ "$MODE" != dry ]; then
    mkdir -p "$LOGDIR" || { echo "run_on_device.sh: cannot create LOGDIR '$LOGDIR'" >&2; exit 2; }
    LOGDIR=$(cd "$LOGDIR" && pwd)
    [ -w "$LOGDIR" ] || { echo "run_on_device.sh: LOGDIR '$LOGDIR' is not writable" >&2; exit 2; }
    SUMMARY=$LOGDIR/summary.txt
    : >"$SUMMARY"
fi
START=$SECONDS
FAILED=0
BUILT=0

note() {
    if [ "$MODE" = dry ]; then echo "$*"; else echo "$*" | tee -a "$SUMMARY"; fi
}

# step NAME LOG MAX_SECONDS GPU(1/0) COMMAND...: run COMMAND with a time limit of MAX_SECONDS,
# cut to what is left of the budget; its output is appended to LOGDIR/LOG. Steps that need a
# GPU are skipped under --rehearse. A step with under 15 s left is skipped, not started.
step() {
    local name=$1 log=$2 max=$3 gpu=$4
    shift 4
    local left=$((BUDGET - (SECONDS - START) - RESERVE))
    local limit=$((max < left ? max : left))
    if [ "$MODE" = dry ]; then
        printf '%-16s limit %4ss  log %-17s %s\n' "$name" "$max" "$log" "$*"
        # a shell function: show the commands it runs
        declare -F "$1" >/dev/null && declare -f "$1" | sed '1,2d;$d' | sed 's/^/                     /'
        return 0
    fi
    if [ "$MODE" = rehearse ] && [ "$gpu" = 1 ]; then
        note "$(printf '%-16s skipped (needs the GPU machine)' "$name")"
        return 0
    fi
    if [ "$limit" -lt 15 ]; then
        note "$(printf '%-16s skipped (time budget: %ss left)' "$name" "$left")"
        return 0
    fi
    {
        echo "=== $name: $* (limit ${limit}s) $(date -u +%H:%M:%S)"
    } >>"$LOGDIR/$log"
    local t0=$SECONDS rc
    # timeout runs programs, not shell functions: those go through a child bash (exported below)
    timeout --kill-after=5 "$limit" bash -c '"$@"' step "$@" >>"$LOGDIR/$log" 2>&1
    rc=$?
    local status=ok
    [ $rc -eq 0 ] || status="FAILED rc=$rc"
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && status="TIMEOUT after ${limit}s"
    echo "=== $name: $status in $((SECONDS - t0))s" >>"$LOGDIR/$log"
    note "$(printf '%-16s %-24s %4ss  %s' "$name" "$status" "$((SECONDS - t0))" "$log")"
    return $rc
}

# The wheels must fit Python 3.12 on x86-64 Linux (the GPU image): checked here, before pip.
check_wheels() {
    "$PYTHON" - "$WHEELS" <<'PY'
import pathlib, sys
folder = pathlib.Path(sys.argv[1])
wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
if not wheels:
    sys.exit(f"no wheels in {folder}: fetch them first (benchmarks/gpu/README.md)")
bad = []
for w in wheels:
    # name-version(-build)?-python-abi-platform.whl; dotted tags list alternatives
    python, abi, platform = w.name[:-4].split("-")[-3:]
    ok = any(t in ("py3", "cp312") for t in python.split(".")) and any(
        t in ("none", "abi3", "cp312") for t in abi.split(".")
    ) and any(t.endswith("x86_64") and "linux" in t for t in platform.split("."))
    print(f"{w.name}: {'fits' if ok else 'DOES NOT FIT'} cp312 x86_64 linux")
    bad += [] if ok else [w.name]
sys.exit(f"wheels that do not fit Python 3.12 x86-64: {bad}" if bad else 0)
PY
}

env_info() {
    echo "python: $("$PYTHON" -c 'import sys; print(sys.version)')"
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "devices", torch.cuda.device_count())' || true
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv || echo "nvidia-smi: not available"
    command -v nvcc >/dev/null && nvcc --version | tail -2 || echo "nvcc: not on PATH"
    command -v compute-sanitizer >/dev/null && echo "compute-sanitizer: $(command -v compute-sanitizer)" || echo "compute-sanitizer: not on PATH"
    uname -a
    return 0
}

build() {
    # scikit-build-core, pybind11, cmake and ninja are in the GPU image; scipy-openblas32 comes
    # from the wheels (installed into SITE, which is on PYTHONPATH for CMake's Python too).
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl || return $?
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$PYTHON" -m pip install --no-build-isolation --no-deps \
        --no-index --no-cache-dir --upgrade --target "$SITE" \
        -C cmake.define.ALIGNSCOPE_CUDA=ON \
        -C "cmake.define.ALIGNSCOPE_CUDA_ARCHITECTURES=$CUDA_ARCH" \
        -C build-dir=/tmp/alignscope-build -v .
}

import_check() {
    "$PYTHON" -c 'import alignscope, json; print(alignscope.__file__); print(json.dumps(alignscope.backend_info(), indent=1))'
}

if [ -z "${CUDACXX:-}" ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    export CUDACXX=/usr/local/cuda/bin/nvcc
fi
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
[ "$MODE" = rehearse ] && export PYTHONPATH=${PYTHONPATH#"$SITE:"} # use the package as installed here

export PYTHON WHEELS SITE CUDA_ARCH
export -f env_info check_wheels build import_check
note "run_on_device.sh mode=$MODE budget=${BUDGET}s arch=$CUDA_ARCH python=$PYTHON wheels=$WHEELS logdir=$LOGDIR"
step environment 00_env.log 30 0 env_info
step wheels 01_build.log 20 0 check_wheels || FAILED=1
if [ $FAILED -eq 0 ]; then
    step build 01_build.log 240 1 build && BUILT=1 || FAILED=1
fi
step import 01_build.log 30 0 import_check || FAILED=1
if [ "$MODE" = rehearse ]; then
    step pytest-collect 02_pytest.log 60 0 "$PYTHON" -m pytest -q -p no:cacheprovider --collect-only tests/gpu || FAILED=1
    step bench-args 04_bench.log 30 0 "$PYTHON" benchmarks/bench_ad_gpu.py --sizes 1000 --dims 64 || FAILED=1
elif [ "$MODE" = dry ] || [ $BUILT -eq 1 ]; then
    step pytest 02_pytest.log 120 1 "$PYTHON" -m pytest -q -p no:cacheprovider -ra tests/gpu || FAILED=1
    step sanitizer 03_sanitizer.log 90 1 compute-sanitizer --tool memcheck --error-exitcode 3 \
        "$PYTHON" benchmarks/gpu/sanitizer_case.py || FAILED=1
    step bench-small 04_bench.log 60 1 "$PYTHON" benchmarks/bench_ad_gpu.py --sizes 10000 --dims 512
    step bench-1e5 04_bench.log 90 1 "$PYTHON" benchmarks/bench_ad_gpu.py --sizes 100000 --dims 512,768
    step bench-1e6 04_bench.log 240 1 "$PYTHON" benchmarks/bench_ad_gpu.py --sizes 1000000 --dims 512
else
    note "pytest, sanitizer, benchmarks: skipped (the build failed; see 01_build.log)"
fi
if [ "$MODE" = dry ]; then
    note "dry run: nothing ran; the limits are cut to what is left of the ${BUDGET}s budget"
else
    note "total $((SECONDS - START))s of ${BUDGET}s; $([ $FAILED -eq 0 ] && echo 'all steps passed' || echo 'SOME STEPS FAILED')"
fi
exit $FAILED
