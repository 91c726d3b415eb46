# Sourced by quickstart.sh and test.sh so both use one Python environment: the active virtual (or conda)
# environment if there is one, else .venv, made here if it is missing. Debian 12 and Ubuntu 24.04 refuse
# `pip install` into the system Python (PEP 668), and a project environment keeps the system's packages
# apart on every other system too. Sets PY to that environment's python and installs the packages into it.
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
    echo "error: $PY not found; install Python 3 (Debian/Ubuntu: apt-get install python3 python3-venv) and run this again" >&2
    exit 2
fi
if [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]; then
    echo "setup: using the active environment ${VIRTUAL_ENV:-${CONDA_PREFIX:-}}"
else
    if [ ! -x .venv/bin/python ] && [ ! -x .venv/Scripts/python.exe ]; then
        # Debian ships venv apart: without python3-venv, `-m venv` makes a folder without pip and fails
        if ! "$PY" -m venv .venv >/dev/null 2>&1; then
            rm -rf .venv
            echo "error: $PY cannot make a virtual environment; install its venv module (Debian/Ubuntu: apt-get install python3-venv, with sudo if you are not root) and run this again" >&2
            exit 2
        fi
        echo "setup: made a virtual environment in .venv; the packages go there, not into the system Python"
    else
        echo "setup: using the virtual environment in .venv"
    fi
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=.venv/Scripts/python.exe; fi
fi
# torch first and pinned: a bare `pip install torch` can pull several GB of CUDA libraries; a torch
# already in the environment (a CUDA build, say) is kept
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    echo "setup: installing torch 2.13.0 (a few minutes the first time)"
    if ! "$PY" -m pip install -q torch==2.13.0; then
        echo "error: pip could not install torch==2.13.0 for $("$PY" -V 2>&1); install a torch 2.6 or newer for this Python (https://pytorch.org/get-started/locally/) into $PY's environment and run this again" >&2
        exit 2
    fi
fi
if ! "$PY" -m pip install -q -r requirements.txt; then
    echo "error: pip could not install requirements.txt into $PY's environment (see pip's message above)" >&2
    exit 2
fi
