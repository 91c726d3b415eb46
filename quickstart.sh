#!/usr/bin/env bash
# From a fresh clone to a GPT that writes Shakespeare: install, prepare the data, train the
# recipe that suits this machine (GPU or CPU), then print a sample.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
$PY -m pip install -q torch==2.13.0
$PY -m pip install -q -r requirements.txt
$PY data/shakespeare_char/prepare.py
if $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    recipe=config/train_shakespeare_char.py; out=out-shakespeare-char
else
    recipe=config/train_shakespeare_char_cpu.py; out=out-shakespeare-char-cpu
fi
echo "training with $recipe"
$PY train.py "$recipe"
$PY sample.py --out_dir="$out" --num_samples=1 --max_new_tokens=500
