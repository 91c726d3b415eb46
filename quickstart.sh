#!/usr/bin/env bash
# From a fresh clone to a GPT that writes Shakespeare: a virtual environment (unless one is active),
# the packages, Tiny Shakespeare, the best recipe this repository has for the machine, then a sample.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

# Debian 12 and Ubuntu 24.04 refuse `pip install` into the system Python (PEP 668), so the packages go
# into a project environment, .venv, unless you already work in one
if [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]; then
    echo "quickstart: installing into the active environment ${VIRTUAL_ENV:-${CONDA_PREFIX:-}}"
else
    if [ ! -x .venv/bin/python ] && [ ! -x .venv/Scripts/python.exe ]; then
        if ! "$PY" -m venv .venv >/dev/null 2>&1; then
            rm -rf .venv
            echo "error: $PY cannot make a virtual environment; install its venv module (Debian/Ubuntu: sudo apt-get install python3-venv) and run this again" >&2
            exit 2
        fi
        echo "quickstart: made a virtual environment in .venv; the packages go there, not into the system Python"
    else
        echo "quickstart: using the virtual environment in .venv"
    fi
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=.venv/Scripts/python.exe; fi
    echo "quickstart: later, run the scripts with $PY (or: source .venv/bin/activate)"
fi
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -r requirements.txt
"$PY" data/shakespeare_char/prepare.py

# the best recipe for the hardware: on a GPU nanoGPT's baby GPT; on a CPU round two's speedrun recipe (Muon,
# rotary positions, ReLU^2, QK-norm, bf16 where the CPU has it, torch.compile, a clock-driven schedule) for two
# minutes of training, after its compilation. nanoGPT's own CPU recipe stays in config/classic_shakespeare_char_cpu.py.
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    recipe=config/train_shakespeare_char.py; out=out-shakespeare-char; budget=
else
    recipe=config/speedrun2_shakespeare_char_cpu.py; out=out-speedrun2-shakespeare-char-cpu; budget=--max_seconds=120
    # torch.compile builds C++ on a CPU: without a compiler the recipe runs uncompiled, a little slower
    if ! "$PY" -c "import sys; from core import hardware; sys.exit(0 if hardware.cpp_compiler() else 1)"; then
        budget="$budget --compile=False"
    fi
fi
echo "quickstart: training with $recipe $budget"
# run again, it moves the previous quickstart run aside (to $out-prev-<date>) rather than stopping
"$PY" train.py "$recipe" $budget --overwrite=True
"$PY" sample.py --out_dir="$out" --num_samples=1 --max_new_tokens=500
