"""A run's metrics.jsonl: one JSON record a line, appended as the run goes, and the code a run was trained with."""

import datetime
import json
import os
import subprocess
import sys

from core.paths import REPO


def code_version(repo=REPO):
    """{'commit': the checkout's HEAD, 'dirty': whether tracked files differ from it}, each None where it cannot
    be told (not a git checkout, no git program, a git that refuses the folder): a result can then be traced to
    the code that produced it. Untracked files (runs, datasets) do not make the tree dirty."""
    def git(*args):
        try:
            r = subprocess.run(['git', '-C', repo, *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None
    commit = git('rev-parse', 'HEAD')
    status = git('status', '--porcelain', '--untracked-files=no') if commit else None
    return {'commit': commit, 'dirty': None if status is None else bool(status)}


class MetricsLog:
    """Appends records to out_dir/metrics.jsonl. A failed append (full disk, odd out_dir) is a warning said once,
    so the checkpoint saves that follow still happen."""

    def __init__(self, out_dir):
        self.path = os.path.join(out_dir, 'metrics.jsonl')
        self.failed = []  # the iterations whose records were lost

    def start(self, iter_num, code, config):
        """The record a run (or a resumed run) begins with: when, from which iteration, the code and the config."""
        self.append({'kind': 'start', 'iter': iter_num, 'time': datetime.datetime.now().astimezone().isoformat(
            timespec='seconds'), **code, 'config': config})

    def append(self, record):
        try:
            with open(self.path, 'a') as f:
                f.write(json.dumps(record) + '\n')
        except OSError as e:
            if not self.failed:
                print(f"warning: cannot append to {self.path} ({e.strerror or e}); training goes on and checkpoints "
                      f"are still saved, but this run's curve has gaps", file=sys.stderr, flush=True)
            self.failed.append(record.get('iter'))


class Wandb:
    """Weights & Biases when on (wandb_log, rank 0), else nothing: train.py logs through it either way."""

    def __init__(self, on, project='', run_name='', config=None):
        self.run = None
        if on:
            from core.training import tracking
            self.run = tracking.start_wandb(project, run_name, config)

    def log_eval(self, record, mfu):
        """An eval record of metrics.jsonl, with the running MFU (a fraction, negative while unknown)."""
        if self.run is not None:
            self.run.log({'iter': record['iter'], 'tokens': record['tokens'], 'train/loss': record['train_loss'],
                          'val/loss': record['val_loss'], 'lr': record['lr'], **({'mfu': mfu * 100} if mfu >= 0 else {}),
                          **{f'{k[:-4]}/bpb': record[k] for k in ('train_bpb', 'val_bpb') if k in record},
                          **{f'health/{k}': v for k, v in record.get('health', {}).items()}}, step=record['iter'])

    def log_step(self, iter_num, loss, lr, tok_s, grad_norm, mfu):
        if self.run is not None:
            self.run.log({'train/loss_step': loss, 'tokens_per_sec': tok_s, 'lr': lr, 'grad_norm': grad_norm,
                          **({'mfu': mfu * 100} if mfu is not None else {})}, step=iter_num)

    def finish(self):
        if self.run is not None:
            self.run.finish()
