#!/usr/bin/env bash
# The GPU suite in one command, on one H100/H200, offline, in under 8 minutes:
#
#   bench/gpu_wheels.sh 3.11          # beforehand, on a machine with PyPI: the wheels it may need
#   bench/gpu_suite.sh [--workdir DIR] # on the GPU machine; prints one table
#   bench/gpu_suite.sh --smoke         # the same rows on the tiny model on the CPU (its self-test)
#
# Installs, from bench/wheels/ only (never the network), whatever of hydra-core, omegaconf, webdataset,
# deepspeed, rich, sentencepiece, psutil, pillow and bitsandbytes is missing, then runs bench/gpu_suite.py.
# The random Yi-VL-6B-shaped checkpoint (about 13 GB) is written under the work folder (default: a new
# temporary folder); pass --workdir to put it on a larger disk.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=bench/wheels
declare -A DIST=(
    [hydra]=hydra-core [omegaconf]=omegaconf [webdataset]=webdataset [deepspeed]=deepspeed [rich]=rich
    [sentencepiece]=sentencepiece [psutil]=psutil [PIL]=pillow [bitsandbytes]=bitsandbytes
)
missing=()
for module in "${!DIST[@]}"; do
    python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$module') is None)" \
        || missing+=("${DIST[$module]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ -d "$WHEELS" ]; then
        wanted=()
        for dist in "${missing[@]}"; do
            # a package without a wheel here (bitsandbytes over budget) is left out; its row says so
            ls "$WHEELS"/"${dist//-/_}"-*.whl >/dev/null 2>&1 && wanted+=("$dist")
        done
        echo "installing from $WHEELS: ${wanted[*]:-nothing}"
        [ "${#wanted[@]}" -eq 0 ] || python -m pip install --quiet --disable-pip-version-check --no-index \
            --find-links "$WHEELS" "${wanted[@]}" \
            || echo "warning: installing from $WHEELS failed; the rows that need those packages will say so"
    else
        echo "warning: missing ${missing[*]} and no $WHEELS (run bench/gpu_wheels.sh first)"
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python bench/gpu_suite.py "$@"
