"""Laptops: every script starts (its --help) on a Python that looks like Windows or macOS, where the
Unix-only modules (resource, fcntl) do not exist. Each runs in a fresh interpreter that first imports
the libraries as this machine has them, then hides those modules and changes sys.platform."""

import glob
import os
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPTS = sorted(os.path.relpath(p, REPO) for p in
                 glob.glob(os.path.join(REPO, '*.py')) + glob.glob(os.path.join(REPO, 'studies', '*.py')) +
                 glob.glob(os.path.join(REPO, 'data', 'prepare.py')) +
                 glob.glob(os.path.join(REPO, 'data', '*', 'prepare.py')))

# the stdlib and third-party modules pick their platform code when first imported; importing them as
# they are here keeps the test about our code, not about a Linux interpreter pretending to be Windows
PROBE = r'''
import sys, runpy, io, contextlib
import subprocess, multiprocessing, asyncio, socket, tempfile, uuid, shutil, concurrent.futures, json, urllib.request
import numpy, torch, tiktoken
for name in ('resource', 'fcntl'):
    sys.modules[name] = None  # `import resource` now raises ImportError, as on Windows
platform, repo, scripts = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.platform = platform
sys.path.insert(0, repo)
failed = []
for script in scripts:
    sys.argv = [script, '--help']
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_path(f'{repo}/{script}', run_name='__main__')
    except SystemExit as e:
        if e.code not in (0, None):
            failed.append(f'{script}: exit {e.code}: {out.getvalue()[-300:]}')
    except BaseException as e:
        failed.append(f'{script}: {type(e).__name__}: {e}')
print('\n'.join(failed))
'''


@pytest.mark.parametrize('platform', ['win32', 'darwin'])
def test_every_script_starts_without_unix_only_modules(platform):
    assert len(SCRIPTS) >= 15
    r = subprocess.run([sys.executable, '-c', PROBE, platform, REPO, *SCRIPTS], capture_output=True, text=True,
                       timeout=600, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == '', r.stdout
