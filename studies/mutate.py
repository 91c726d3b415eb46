"""
Plant known bugs one at a time in a scratch copy of the repository and check that the tests meant to
catch each one fail. A mutation the tests let through means they have gone blind to that bug.

    python studies/mutate.py                     # every mutation (about 10 minutes on 2 busy cores)
    python studies/mutate.py --only=sampler,grads_twice
    python studies/mutate.py --list_only=True
    python studies/mutate.py --baseline=True     # first check the chosen tests pass on the unmutated copy

The copy holds the working tree's files (tracked and untracked, not ignored), so uncommitted changes are
checked too; nothing in the repository itself is touched. A mutation whose code no longer exists (the
code moved) is reported as stale, and one that breaks the code instead of planting a bug (the tests
error out rather than fail) as broken; neither counts as caught. Exit status 1 when any mutation is
not caught.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (file, code as it is, the bug planted in its place, the tests that must fail, what the bug is);
# a test given as 'file.py -k expr' runs that selection
MUTATIONS = {
    'sampler': ('train.py', "    data_gen.set_state(ckpt['data_rng'])\n", "",
                'tests/test_reliability.py -k resume_is_bitwise_exact',
                "resume forgets the data sampler's state"),
    'grads_twice': ('core/training/planner.py', "    grads = 4 * n_params // W\n", "    grads = 8 * n_params // W\n",
                    'tests/test_memory.py -k "by_hand or live_tensor"', "the planner counts the gradients twice"),
    'ranks_seeded_alike': ('train.py', "dropout differs\n    torch.manual_seed(seed + rank)\n",
                           "dropout differs\n    torch.manual_seed(seed)\n",
                           'tests/test_distributed.py -k ddp_matches', "every DDP rank draws the same dropout masks"),
    'rank0_rng_everywhere': ('train.py', "ckpt['rng_per_rank'][rank] if 'rng_per_rank' in ckpt else ckpt['rng']",
                             "ckpt['rng']", 'tests/test_distributed.py -k ddp_matches',
                             "resume gives every rank rank 0's random state"),
    'muon_momentum': ('core/training/optim.py', "for opt, s in zip(self.optimizers, state['optimizers']):",
                      "for opt, s in zip(self.optimizers[1:], state['optimizers'][1:]):",
                      'tests/test_reliability.py -k muon_resume', "resume drops Muon's momentum"),
    'time_clock': ('train.py', "clock_offset = ckpt.get('train_seconds', 0.0) if lr_schedule == 'time' else 0.0",
                   "clock_offset = 0.0", 'tests/test_reliability.py -k time_schedule',
                   "lr_schedule='time' restarts its clock on resume"),
    'no_learned_positions': ('model.py', "            x = x + self.transformer.wpe(positions)\n", "            x = x\n",
                             'tests/test_switches.py -k nope', "learned positions never reach the model"),
    'compile_prefix': ('train.py', "        'model': raw_model.state_dict(),", "        'model': model.state_dict(),",
                       'tests/test_reliability.py -k compile_prefix',
                       "checkpoints of compiled runs carry '_orig_mod.' names"),
    'sigterm': ('train.py', "signal.signal(signal.SIGTERM, on_signal)\n", "",
                'tests/test_reliability.py -k sigterm', "SIGTERM kills the run without a save"),
    'vocab_padding': ('train.py', "v if v <= 256 else -(-v // 64) * 64", "v",
                      'tests/test_reliability.py -k vocab_is_padded', "large vocabularies are not padded to 64"),
    'always_save': ('train.py', "(improved or always_save_checkpoint)", "(improved)",
                    'tests/test_reliability.py -k always_save', "always_save_checkpoint is ignored"),
    'max_seconds_save': ('train.py', "done = (iter_num % eval_interval == 0 or last or eval_only)",
                         "done = (iter_num % eval_interval == 0 or iter_num >= max_iters or eval_only)",
                         'tests/test_reliability.py -k always_save', "the time budget ends without an eval and save"),
    'first_mfu_window': ('train.py', "speed_windows > 1", "speed_windows > 0",
                         'tests/test_train.py -k eval_lines', "the first MFU window includes warm-up and compile"),
    'bf16_by_torch_check': ('core/hardware.py', "return 'bfloat16' if native_bf16(device) else 'float16'",
                            "return 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'",
                            'tests/test_hardware.py -k capability', "V100/T4 get emulated bf16"),
    'compile_any_gpu': ('core/hardware.py', "        return cap >= (7, 0)\n", "        return True\n",
                        'tests/test_hardware.py -k capability', "compile='auto' on GPUs inductor refuses"),
    'h200_nvl_peak': ('core/hardware.py', "    'H200 NVL': dict(bf16=835, fp16=835, tf32=418, fp32=60),\n", "",
                      'tests/test_hardware.py -k peak', "an H200 NVL is quoted at the SXM peak"),
    'unknown_gpu_peak': ('core/hardware.py', "            return None, f\"{name} is not in the peak table",
                         "            return 312e12, f\"{name} is not in the peak table",
                         'tests/test_hardware.py -k unknown', "an unknown GPU gets an A100's peak"),
    'no_set_device': ('core/hardware.py', "        torch.cuda.set_device(int(index))\n", "",
                      'tests/test_hardware.py -k device', "cuda:N leaves GPU 0 current"),
    'torchrun_device': ('core/hardware.py', "    return pick_device(f'cuda:{local_rank}'), note",
                        "    return pick_device(device if ':' in device else f'cuda:{local_rank}'), note",
                        'tests/test_hardware.py -k torchrun', "--device=cuda:0 puts every torchrun rank on GPU 0"),
    'rng_all_gpus': ('core/training/checkpoint.py', "        if index < len(state['cuda']):", "        if True:",
                     'tests/test_hardware.py -k rng_state', "resume on fewer GPUs raises IndexError"),
    'fsdp_unsharded': ('core/training/planner.py', "    params = 4 * n_params // W\n", "    params = 4 * n_params\n",
                       'tests/test_memory.py -k by_hand', "the planner gives each FSDP process the full weights"),
    'hopper_kernels': ('core/hardware.py', "'gemm', 'nvjet', ", "'gemm', ",
                       'tests/test_hardware.py -k kernels', "Hopper's nvjet GEMMs land under 'other'"),
    'chunked_bf16_sum': ('model.py', "        if not torch.is_autocast_enabled(kind):", "        if True:",
                         'tests/test_memory.py -k bf16', "the chunked loss sums the head's gradient in bf16"),
    'softcap_bf16': ('model.py', "torch.tanh(logits.float() / cap)", "torch.tanh(logits / cap)",
                     'tests/test_memory.py -k softcap_runs', "soft-capping runs tanh on bf16 logits"),
}

# -----------------------------------------------------------------------------
only = ''  # comma-separated names; empty: all
baseline = False  # run each chosen test selection on the unmutated copy first (it must pass)
list_only = False  # print the mutations and stop
timeout = 900  # seconds per test run
# -----------------------------------------------------------------------------


def copy_repo(dest):
    files = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split('\0')
    for f in filter(None, files):
        src = os.path.join(REPO, f)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, f)) or dest, exist_ok=True)
            shutil.copy2(src, os.path.join(dest, f))


def run_tests(root, selection):
    args = selection.split(' -k ')
    cmd = [sys.executable, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider', args[0]]
    if len(args) > 1:
        cmd += ['-k', args[1].strip().strip('"')]
    t0 = time.time()
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONDONTWRITEBYTECODE='1'))
    tail = (r.stdout.strip().splitlines() or [''])[-1]
    return r.returncode, time.time() - t0, tail


def main():
    names = [n.strip() for n in only.split(',') if n.strip()] or [*MUTATIONS]
    unknown = [n for n in names if n not in MUTATIONS]
    if unknown:
        raise UserError(f"unknown mutation(s) {', '.join(unknown)}; known: {', '.join(MUTATIONS)}")
    if timeout <= 0:
        raise UserError(f"timeout must be a positive number of seconds, got {timeout}")
    if list_only:
        for n in names:
            path, _, _, tests, what = MUTATIONS[n]
            print(f"{n:<22}{path:<20}{what}  [{tests}]")
        return 0
    bad, caught_count = 0, 0
    with tempfile.TemporaryDirectory(prefix='mutate-') as root:
        copy_repo(root)
        print(f"scratch copy: {root}; {len(names)} mutation(s)", flush=True)
        if baseline:
            for selection in dict.fromkeys(MUTATIONS[n][3] for n in names):
                code, seconds, tail = run_tests(root, selection)
                print(f"baseline  {selection:<58}{'passes' if code == 0 else 'FAILS'} ({seconds:.0f} s) {tail}",
                      flush=True)
                bad += code != 0
        for n in names:
            path, old, new, selection, what = MUTATIONS[n]
            target = os.path.join(root, path)
            with open(target, encoding='utf-8') as f:
                original = f.read()
            if original.count(old) != 1:
                print(f"{n:<22}STALE: the code to mutate occurs {original.count(old)} times in {path}", flush=True)
                bad += 1
                continue
            with open(target, 'w', encoding='utf-8') as f:
                f.write(original.replace(old, new))
            try:
                code, seconds, tail = run_tests(root, selection)
            except subprocess.TimeoutExpired:
                code, seconds, tail = -1, timeout, 'timed out'
            finally:
                with open(target, 'w', encoding='utf-8') as f:
                    f.write(original)
            # a test must fail on the bug; an error (the mutated code does not even import) proves nothing
            caught = code == 1 and ' failed' in tail
            bad += not caught
            caught_count += caught
            verdict = 'caught' if caught else 'SURVIVED' if code == 0 else 'BROKEN'
            print(f"{n:<22}{verdict:<10}{seconds:5.0f} s  {what}  [{selection}: {tail}]",
                  flush=True)
    print(f"{caught_count} of {len(names)} mutations caught")
    return 1 if bad else 0


if __name__ == '__main__':
    sys.path.insert(0, REPO)
    from configurator import config_keys, configure
    from core.errors import UserError, install_excepthook
    install_excepthook()
    configure(globals(), [k for k in config_keys(globals()) if k not in ('MUTATIONS', 'REPO')])
    sys.exit(main())
