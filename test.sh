#!/usr/bin/env bash
# The test suite, in the same environment quickstart.sh uses (the active one, else .venv, made if missing).
# Arguments go to pytest: `bash test.sh tests/data` runs one folder, `bash test.sh -m slow` the slow tests,
# `bash test.sh -m ''` everything.
set -euo pipefail
cd "$(dirname "$0")"
source .ci/env.sh
# the test models are tiny: one thread each is faster and keeps parallel subprocesses from fighting over cores
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# two pytest workers (pytest-xdist) keep 2 cores busy: most tests wait on one single-threaded subprocess.
# TEST_WORKERS=N sets how many; `bash test.sh -n 0 ...` runs in one process (for --pdb, say)
workers=${TEST_WORKERS:-2}
# the whole of tests/ unless a path is named
where=tests
for arg in "$@"; do [ -e "${arg%%::*}" ] && where=; done
echo "test: $PY -m pytest -q -n $workers -m 'not slow' $where $*"
exec "$PY" -m pytest -q -n "$workers" -m 'not slow' $where "$@"
