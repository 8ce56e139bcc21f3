#!/usr/bin/env bash
# Prepare bench/wheels/ for bench/gpu_suite.sh on a GPU machine without network (run it here, with PyPI).
#
#   bench/gpu_wheels.sh [PYTHON_VERSION]     # the GPU machine's Python, e.g. 3.11 (default: this one's)
#
# The GPU machine is expected to have torch, lightning, transformers, peft (and their numpy, pyyaml,
# tqdm, packaging, safetensors). Everything else train.py and the suite import comes from here:
# pure-python wheels, the few compiled ones for that Python on x86-64 Linux, and DeepSpeed (an sdist
# on PyPI) built into a pure-python wheel (no ops compiled; ZeRO-3 with torch's AdamW needs none).
# The total must stay under 64 MiB; bitsandbytes is kept only if it fits, otherwise the suite's QLoRA
# row says "skipped: wheel over budget".
set -euo pipefail
cd "$(dirname "$0")"
PY="${1:-$(python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}"
BUDGET=$((64 * 1024 * 1024))
DEST=wheels
mkdir -p "$DEST"
rm -f "$DEST/bitsandbytes.over-budget"
PLATFORMS=(--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
BINARY=(--only-binary=:all: --python-version "$PY" "${PLATFORMS[@]}")
PIP=(python -m pip download --quiet --disable-pip-version-check -d "$DEST")

# Hydra, WebDataset, rich (progress and tables) and DeepSpeed's pure-python dependencies; pip wheel
# builds the ones published only as an sdist (antlr4-python3-runtime 4.9.3, which Hydra pins)
python -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$DEST" \
    hydra-core "omegaconf>=2.3,<2.4" "antlr4-python3-runtime==4.9.3" webdataset braceexpand \
    rich markdown-it-py mdurl pygments hjson py-cpuinfo einops
# compiled: pydantic with its matching pydantic-core, msgpack, ninja, psutil, sentencepiece, pillow
"${PIP[@]}" "${BINARY[@]}" pydantic
"${PIP[@]}" --no-deps "${BINARY[@]}" msgpack ninja psutil sentencepiece pillow
# DeepSpeed: build the wheel from its sdist against the torch installed here (no ops are compiled)
if ! ls "$DEST"/deepspeed-*.whl >/dev/null 2>&1; then
    DS_BUILD_OPS=0 python -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
        -w "$DEST" "deepspeed==0.19.8"
fi

total() { du -cb "$DEST"/*.whl | tail -n 1 | cut -f 1; }
"${PIP[@]}" --no-deps "${BINARY[@]}" --platform manylinux_2_24_x86_64 bitsandbytes || true
if [ "$(total)" -gt "$BUDGET" ]; then
    rm -f "$DEST"/bitsandbytes-*.whl
    echo "bitsandbytes wheel does not fit the 64 MiB budget: the QLoRA row will be skipped" \
        | tee "$DEST/bitsandbytes.over-budget"
fi
size=$(total)
printf 'bench/%s: %d wheels, %.1f MiB (budget 64 MiB), for Python %s\n' \
    "$DEST" "$(ls "$DEST"/*.whl | wc -l)" "$(echo "$size / 1048576" | bc -l)" "$PY"
if [ "$size" -gt "$BUDGET" ]; then
    echo "error: bench/$DEST is over the 64 MiB budget" >&2
    exit 1
fi
