#!/usr/bin/env bash
# Download the wheels the GPU machine lacks into .whl/ (Python 3.12, manylinux x86-64, no deps).
#
# The device image (torch 2.11+cu130, Python 3.12) has torch, torchvision, timm, regex, tqdm,
# huggingface_hub, safetensors, numpy, ninja, rich and jaxtyping, but not open_clip_torch, ftfy,
# wcwidth or gsplat. gsplat 1.5.3 on PyPI is a pure-Python wheel whose CUDA code is compiled on first
# use (bench/gpu_check.sh builds it). Run from the repository root:  bash bench/fetch_wheels.sh
# .whl/ is listed in .git/info/exclude (never committed); carry it with the device call.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OPEN_CLIP=${OPEN_CLIP_VERSION:-$("$PY" -c 'import open_clip; print(open_clip.__version__)' 2>/dev/null || echo 3.3.0)}
PKGS=("gsplat==1.5.3" "open_clip_torch==$OPEN_CLIP" "ftfy" "wcwidth")

exclude="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"

mkdir -p .whl
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
for pkg in "${PKGS[@]}"; do
    echo "== $pkg"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]}" -d .whl "$pkg"
done
# One version of each package only: two stop the install on the device.
dups=$(ls .whl/*.whl | xargs -n1 basename | sed 's/-[0-9].*//' | sort | uniq -d)
if [ -n "$dups" ]; then
    echo "more than one version of: $dups (remove the older wheels from .whl/)" >&2
    exit 1
fi
ls -l .whl
du -sh .whl
