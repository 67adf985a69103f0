#!/usr/bin/env bash
# One call on a fresh GPU machine with no network: install the carried wheels, build gsplat's CUDA
# extension for the card, run the CUDA parity test, the benchmark (gsplat and torch renderers), a
# whole Final run (2000 iterations x 8 views, goal <= 30 s on one H100) and a fp32 vs bf16-autocast
# comparison of final losses on the same seed. Everything lands in $OUT/gpu_figures.json and
# $OUT/gpu_check.log (plus $OUT/gsplat_build.log). Each stage is timed and bounded; a failed stage
# does not stop the next; the JSON is always written (trap on EXIT).
#
# Here first:   bash bench/fetch_wheels.sh           (fills .whl/, ignored by git)
# On the device (repository root, .whl carried):   bash bench/gpu_check.sh
# GPU_CHECK_BUDGET (seconds, default 390) bounds the whole script; the build gets GSPLAT_BUILD_LIMIT (300).
# A CPU dry run (what the CPU allows: stage plumbing, Python pieces, the JSON) shrinks the work:
#   GPU_CHECK_SKIP_BUILD=1 GPU_CHECK_DEVICE=cpu GPU_CHECK_ITERS=3 GPU_CHECK_CMP_ITERS=2 GPU_CHECK_REPEAT=1 GPU_CHECK_VIEWS=2 \
#   GPU_CHECK_EXTRA="--clip-config tests/backend/assets/tiny_clip_rn.json --threads 1" PATH=.venv/bin:$PATH \
#   OUT=/tmp/gpu_dry bash bench/gpu_check.sh
#
# Timeline: the gsplat build (CPU-bound, MAX_JOBS = cores - 2) runs in the background while the GPU
# runs the torch-renderer stages (the fp32/bf16 comparison and the torch-renderer benchmark; their
# timings are flagged "during_build"); the timed gsplat stages run after it, most important first.
# fp32 vs bf16: (a) a 300-iteration run of each from the same seed (final losses), (b) amp_check: the CLIP
# losses and pixel gradients of both precisions on identical inputs.
set -u
export PYTHONUNBUFFERED=1
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-390}
BUILD_LIMIT=${GSPLAT_BUILD_LIMIT:-300}
DEV=${GPU_CHECK_DEVICE:-cuda}
ITERS=${GPU_CHECK_ITERS:-2000}
CMP_ITERS=${GPU_CHECK_CMP_ITERS:-300}
REPEAT=${GPU_CHECK_REPEAT:-20}
VIEWS=${GPU_CHECK_VIEWS:-8}
read -r -a EXTRA <<< "${GPU_CHECK_EXTRA:-}"
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
PARTS=$(mktemp -d /tmp/gpu_check_parts.XXXXXX)
: > "$PARTS/stages.tsv"
exec > >(tee -a "$LOG") 2>&1

elapsed() { echo $(( $(date +%s) - START )); }
say() { echo "[gpu_check $(elapsed)s] $*"; }

# ---------------------------------------------------------------- the JSON, always written
write_json() {
    python3 - "$PARTS" "$OUT/gpu_figures.json" "$START" <<'PY' || echo "[gpu_check] could not write gpu_figures.json"
import json, os, sys, time
parts, dest, start = sys.argv[1], sys.argv[2], float(sys.argv[3])

def load(name):
    path = os.path.join(parts, name)
    if not os.path.exists(path):
        return None
    text = open(path).read()
    try:
        return json.loads(text)
    except ValueError:  # a bench run prints one JSON document after any noise
        i = text.find("{")
        try:
            return json.loads(text[i:]) if i >= 0 else {"unparsed": text[-2000:]}
        except ValueError:
            return {"unparsed": text[-2000:]}

def text(name, tail=4000):
    path = os.path.join(parts, name)
    return open(path, errors="replace").read()[-tail:] if os.path.exists(path) else None

stages = []
for line in open(os.path.join(parts, "stages.tsv")):
    name, rc, secs, limit, note = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
    stages.append({"stage": name, "rc": int(rc) if rc.lstrip("-").isdigit() else rc,
                   "seconds": float(secs) if secs else None, "limit_s": int(limit) if limit else None,
                   "note": note, "timed_out": rc in ("124", "137")})
fig = {"written_at_s": round(time.time() - start, 1), "machine": load("machine.json"), "stages": stages}
build = [s for s in stages if s["stage"] == "gsplat_build"]
fig["gsplat_build_seconds"] = build[0]["seconds"] if build else None
fig["gsplat_built"] = bool(build and build[0]["rc"] == 0)
py = text("pytest.txt", 6000)
if py is not None:
    lines = py.splitlines()
    fig["cuda_parity_test"] = {
        "rc": next((s["rc"] for s in stages if s["stage"] == "pytest_cuda_parity"), None),
        "summary": next((l for l in reversed(lines) if " passed" in l or " failed" in l or " skipped" in l
                         or " error" in l), None),
        "printed": [l for l in lines if l.startswith(("parity", "timing", "packed", "torch", "gsplat"))
                    or "ms" in l][:40]}
fig["bench"] = {k: load(f"bench_{k}.json")
                for k in ("gsplat_render", "gsplat", "torch_during_build", "gsplat_tuned", "torch")}
sizes = {}
for name in sorted(os.listdir(parts)):
    if name.startswith("sizes_") and name.endswith(".json"):
        doc = load(name)
        r = (doc or {}).get("results", [{}])[0] if isinstance(doc, dict) else {}
        sizes[name[6:-5]] = {k: r.get(k) for k in ("sec_per_iter", "peak_cuda_mib", "syncs_per_step", "renderer",
                                                   "settings", "error")}
fig["step_final_by_strokes_and_size"] = sizes
runs = {}
for name in sorted(os.listdir(parts)):
    if name.startswith("final_") and name.endswith(".json"):
        doc = load(name)
        res = (doc or {}).get("results", [doc])[0] if isinstance(doc, dict) else None
        runs[name[:-5]] = res
fig["final_runs"] = runs
head = runs.get("final_2000_bf16") or runs.get("final_2000_fp32")
if head and "total_seconds" in head:
    fig["final_2000_iterations_8_views"] = {"seconds": head["total_seconds"], "loop_seconds": head["loop_seconds"],
                                            "renderer": head["renderer"], "amp": bool(head["options"].get("amp")),
                                            "goal_seconds": 30.0, "goal_met": head["total_seconds"] <= 30.0}
a, b = runs.get("final_amp_cmp_fp32"), runs.get("final_amp_cmp_bf16")
if a and b and "final_losses" in a and "final_losses" in b:
    cmp = {}
    for k, va in a["final_losses"].items():
        vb = b["final_losses"].get(k)
        if vb is not None:
            cmp[k] = {"fp32": va, "bf16": vb, "rel_diff": abs(vb - va) / max(abs(va), 1e-12)}
    for key in ("heldout_loss", "final_loss_mean_last_10pct"):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
            cmp[key] = {"fp32": va, "bf16": vb, "rel_diff": abs(vb - va) / max(abs(va), 1e-12)}
    fig["fp32_vs_bf16"] = {"iterations": a.get("iterations"), "renderer": a.get("renderer"),
                           "seed": a["options"].get("seed", 0), "random_clip_weights": True, "terms": cmp,
                           "sec_per_iter": {"fp32": a.get("sec_per_iter"), "bf16": b.get("sec_per_iter")},
                           "note": "measured while gsplat compiled on the other cores: losses compare, timings only roughly"}
chk = load("amp_check.json")
if isinstance(chk, dict) and chk.get("results"):
    r = chk["results"][0]
    fig["fp32_vs_bf16_same_inputs"] = {k: r.get(k) for k in ("low_precision", "worst_total_rel_diff",
                                                              "worst_grad_cosine", "trials", "note", "error")}
json.dump(fig, open(dest, "w"), indent=2)
print(f"[gpu_check] wrote {dest}")
PY
}
trap 'write_json; say "done"' EXIT

# ---------------------------------------------------------------- stage runner
# stage NAME LIMIT OUTFILE CMD...   runs CMD with stdout to $PARTS/OUTFILE (or the log when OUTFILE is -),
# bounded by LIMIT and by what is left of BUDGET; records rc and seconds.
stage() {
    local name=$1 limit=$2 outfile=$3
    shift 3
    local left=$(( BUDGET - $(elapsed) ))
    if (( left < 20 )); then
        say "SKIP $name: ${left}s left of the ${BUDGET}s budget"
        printf '%s\tskipped\t\t%s\tout of time\n' "$name" "$limit" >> "$PARTS/stages.tsv"
        return 0
    fi
    (( limit > left - 5 )) && limit=$(( left - 5 ))
    say "START $name (limit ${limit}s): $*"
    local t0 t1 rc
    t0=$(date +%s.%N)
    if [ "$outfile" = "-" ]; then
        timeout -k 5 "$limit" "$@"
    else
        timeout -k 5 "$limit" "$@" > "$PARTS/$outfile"
    fi
    rc=$?
    t1=$(date +%s.%N)
    local secs
    secs=$(python3 -c "print(round($t1 - $t0, 2))")
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$secs" "$limit" "${STAGE_NOTE:-}" >> "$PARTS/stages.tsv"
    say "END $name rc=$rc ${secs}s"
    return 0
}

# ---------------------------------------------------------------- 0. machine, wheels
PYBIN=$(dirname "$(python3 -c 'import sys; print(sys.executable)')")
export PATH="$PYBIN:$PATH"  # ninja from the Python environment, for torch's cpp_extension
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null | head -1
} > "$PARTS/gpu.txt"
stage install_wheels 120 - python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 - "$PARTS/gpu.txt" > "$PARTS/machine.json" <<'PY' || true
import json, os, platform, sys
import torch
info = {"nvidia_smi": open(sys.argv[1]).read().strip(), "python": platform.python_version(),
        "torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                memory_gib=round(p.total_memory / 2**30, 1), bf16=torch.cuda.is_bf16_supported())
for mod in ("open_clip", "gsplat", "ftfy", "timm", "torchvision"):
    try:
        info[mod] = __import__(mod).__version__
    except Exception as e:  # noqa: BLE001
        info[mod] = f"missing: {type(e).__name__}: {e}"
print(json.dumps(info))
PY
cat "$PARTS/machine.json"

# ---------------------------------------------------------------- 1. gsplat build (background)
CAP=$(python3 -c "import torch; p = torch.cuda.get_device_capability(); print(f'{p[0]}.{p[1]}')" 2>/dev/null || echo 9.0)
NPROC=$(nproc)
JOBS=$(( NPROC > 4 ? NPROC - 2 : NPROC ))  # two cores stay free for the GPU stages that overlap the build
if [ -z "${CUDA_HOME:-}" ]; then
    if [ -x /usr/local/cuda/bin/nvcc ]; then CUDA_HOME=/usr/local/cuda
    elif command -v nvcc >/dev/null; then CUDA_HOME=$(dirname "$(dirname "$(command -v nvcc)")")
    else CUDA_HOME=/usr/local/cuda; fi
fi
export CUDA_HOME
# Exported for every later stage too: torch's JIT keys the build on these flags, so a process without
# them would start compiling gsplat all over again (seen on the H100: the first gsplat stage timed out).
export TORCH_CUDA_ARCH_LIST="$CAP" MAX_JOBS="$JOBS"
say "gsplat build: CUDA_HOME=$CUDA_HOME TORCH_CUDA_ARCH_LIST=$CAP MAX_JOBS=$JOBS (of $NPROC cores), nvcc: $("$CUDA_HOME/bin/nvcc" --version 2>/dev/null | tail -1)"
(
    if [ -n "${GPU_CHECK_SKIP_BUILD:-}" ]; then  # CPU dry runs: never start nvcc on a shared CPU machine
        printf 'gsplat_build\tskipped\t\t0\tGPU_CHECK_SKIP_BUILD\n' >> "$PARTS/stages.tsv"
        exit 0
    fi
    export TORCH_CUDA_ARCH_LIST="$CAP" MAX_JOBS="$JOBS"
    STAGE_NOTE="TORCH_CUDA_ARCH_LIST=$CAP MAX_JOBS=$JOBS" stage gsplat_build "$BUILD_LIMIT" gsplat_build.txt \
        sh -c 'exec python3 -c "from gsplat.cuda._backend import _C; assert _C is not None, \"no CUDA extension\"; print(\"gsplat extension\", _C.__file__)" 2>"$0"' \
        "$OUT/gsplat_build.log"
    say "gsplat build: $(cat "$PARTS/gsplat_build.txt" 2>/dev/null)"
) &
BUILD_PID=$!

# ---------------------------------------------------------------- 2. torch-renderer GPU stages, overlapping the build
# fp32 vs bf16 autocast: the same seed, the same views and augmentations; only CLIP's precision differs.
STAGE_NOTE="during_build" stage amp_cmp_fp32 120 final_amp_cmp_fp32.json \
    python3 bench/backend_speed.py --device $DEV --renderer torch --case final_run --iterations $CMP_ITERS --views-per-step $VIEWS \
    --seed 0 --sync-audit 3 --json "${EXTRA[@]}"
STAGE_NOTE="during_build" stage amp_cmp_bf16 120 final_amp_cmp_bf16.json \
    python3 bench/backend_speed.py --device $DEV --renderer torch --case final_run --iterations $CMP_ITERS --views-per-step $VIEWS \
    --seed 0 --amp --json "${EXTRA[@]}"
STAGE_NOTE="during_build" stage amp_check 90 amp_check.json \
    python3 bench/backend_speed.py --device $DEV --renderer torch --case amp_check --json "${EXTRA[@]}"
STAGE_NOTE="during_build" stage bench_torch_during_build 120 bench_torch_during_build.json \
    python3 bench/backend_speed.py --device $DEV --renderer torch --repeat $REPEAT --json "${EXTRA[@]}"
say "waiting for the gsplat build"
wait "$BUILD_PID"
tail -5 "$OUT/gsplat_build.log"

# ---------------------------------------------------------------- 3. timed stages, most important first
# (never import gsplat's backend to test this: without the .so it would start compiling again)
if awk -F'\t' '$1 == "gsplat_build" && $2 == "0" {ok = 1} END {exit !ok}' "$PARTS/stages.tsv"; then R=gsplat; else R=torch; fi
say "renderer for the timed stages: $R"
if [ "$R" = gsplat ]; then  # the renderer side by side first: cheap (no CLIP)
    stage bench_gsplat_render 60 bench_gsplat_render.json \
        python3 bench/backend_speed.py --device $DEV --renderer gsplat --case render --repeat $REPEAT --json "${EXTRA[@]}"
    stage projection 45 projection.json \
        python3 bench/backend_speed.py --device $DEV --case projection --repeat $REPEAT --json "${EXTRA[@]}"
fi
STAGE_NOTE="renderer=$R amp=bf16" stage final_2000_bf16 150 final_2000_bf16.json \
    python3 bench/backend_speed.py --device $DEV --renderer "$R" --case final_run --iterations $ITERS --views-per-step $VIEWS --amp --json "${EXTRA[@]}"
if [ "$R" = gsplat ]; then K=(); else K=(-k same_on_cuda_and_cpu); fi  # without the build: no gsplat tests
STAGE_NOTE="${K[*]:-all}" stage pytest_cuda_parity 90 pytest.txt \
    python3 -m pytest tests/backend/test_render_cuda.py -q -s -p no:cacheprovider "${K[@]}"
cat "$PARTS/pytest.txt" 2>/dev/null | tail -25
if [ "$R" = gsplat ]; then
    stage bench_gsplat 120 bench_gsplat.json python3 bench/backend_speed.py --device $DEV --renderer gsplat \
        --case step_final --case step_geometry --repeat $REPEAT --count-ops --json "${EXTRA[@]}"
fi
# The Final step at 16 and 64 strokes, 224 and 512 px: ms per step, peak CUDA MiB, host reads per step.
for C in 16 64; do for S in 224 512; do
    STAGE_NOTE="renderer=$R curves=$C size=$S" stage "sizes_${C}_${S}" 60 "sizes_${C}_${S}.json" \
        python3 bench/backend_speed.py --device $DEV --renderer "$R" --case step_final --curves $C --size $S \
        --repeat $REPEAT --count-syncs --json "${EXTRA[@]}"
done; done
STAGE_NOTE="renderer=$R amp+channels_last+cudnn.benchmark" stage bench_tuned 90 bench_gsplat_tuned.json \
    python3 bench/backend_speed.py --device $DEV --renderer "$R" --case step_final --repeat $REPEAT --amp --channels-last \
    --cudnn-benchmark --json "${EXTRA[@]}"
STAGE_NOTE="renderer=$R amp=fp32" stage final_2000_fp32 150 final_2000_fp32.json \
    python3 bench/backend_speed.py --device $DEV --renderer "$R" --case final_run --iterations $ITERS --views-per-step $VIEWS --json "${EXTRA[@]}"
STAGE_NOTE="renderer=$R amp+channels_last+cudnn.benchmark" stage final_2000_tuned 150 final_2000_tuned.json \
    python3 bench/backend_speed.py --device $DEV --renderer "$R" --case final_run --iterations $ITERS --views-per-step $VIEWS \
    --amp --channels-last --cudnn-benchmark --json "${EXTRA[@]}"
STAGE_NOTE="renderer=$R clip_compile=on (torch.compile reduce-overhead: CUDA graphs)" stage final_2000_compiled 200 \
    final_2000_compiled.json python3 bench/backend_speed.py --device $DEV --renderer "$R" --case final_run \
    --iterations $ITERS --views-per-step $VIEWS --compile on --json "${EXTRA[@]}"
STAGE_NOTE="after build, quiet CPU" stage bench_torch 90 bench_torch.json \
    python3 bench/backend_speed.py --device $DEV --renderer torch --case render --case step_final --repeat $REPEAT --json "${EXTRA[@]}"
