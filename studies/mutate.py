"""
Plant known bugs one at a time in a scratch copy of the repository and check that the tests meant to
catch each one fail. A mutation the tests let through means they have gone blind to that bug.

    python studies/mutate.py                     # every mutation (long; --only= picks a few)
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
    'sampler': ('core/training/init.py', "        data_gen.set_state(ckpt['data_rng'])\n", "",
                'tests/system/test_reliability.py -k resume_is_bitwise_exact',
                "resume forgets the data sampler's state"),
    'grads_twice': ('core/training/planner.py', "    grads = 4 * n_params // W\n", "    grads = 8 * n_params // W\n",
                    'tests/training/test_memory.py -k "by_hand or live_tensor"', "the planner counts the gradients twice"),
    'ranks_seeded_alike': ('core/training/init.py', "torch.manual_seed(seed + rank)  # per rank so dropout differs",
                           "torch.manual_seed(seed)  # per rank so dropout differs",
                           'tests/system/test_distributed.py -k ddp_matches', "every DDP rank draws the same dropout masks"),
    'rank0_rng_everywhere': ('core/training/init.py', "ckpt['rng_per_rank'][rank] if 'rng_per_rank' in ckpt else ckpt['rng']",
                             "ckpt['rng']", 'tests/system/test_distributed.py -k ddp_matches',
                             "resume gives every rank rank 0's random state"),
    'muon_momentum': ('core/training/optim.py', "for opt, s in zip(self.optimizers, state['optimizers']):",
                      "for opt, s in zip(self.optimizers[1:], state['optimizers'][1:]):",
                      'tests/system/test_reliability.py -k muon_resume', "resume drops Muon's momentum"),
    'time_clock': ('core/training/init.py',
                   "start.clock_offset = ckpt.get('train_seconds', 0.0) if c['lr_schedule'] == 'time' else 0.0",
                   "start.clock_offset = 0.0", 'tests/system/test_reliability.py -k time_schedule',
                   "lr_schedule='time' restarts its clock on resume"),
    'no_learned_positions': ('model.py', "            x = x + self.transformer.wpe(positions)\n", "            x = x\n",
                             'tests/test_switches.py -k nope', "learned positions never reach the model"),
    'compile_prefix': ('train.py', "state = dict(model=raw_model.state_dict(),", "state = dict(model=model.state_dict(),",
                       'tests/system/test_reliability.py -k compile_prefix',
                       "checkpoints of compiled runs carry '_orig_mod.' names"),
    'sigterm': ('core/training/guards.py', "        signal.signal(signal.SIGTERM, self.on_signal)\n", "",
                'tests/system/test_reliability.py -k sigterm', "SIGTERM kills the run without a save"),
    'vocab_padding': ('core/training/init.py', "v if v <= 256 else -(-v // 64) * 64", "v",
                      'tests/system/test_reliability.py -k vocab_is_padded', "large vocabularies are not padded to 64"),
    'always_save': ('train.py', "(improved or always_save_checkpoint)", "(improved)",
                    'tests/system/test_reliability.py -k always_save', "always_save_checkpoint is ignored"),
    'max_seconds_save': ('train.py', "done = (iter_num % eval_interval == 0 or last or eval_only)",
                         "done = (iter_num % eval_interval == 0 or iter_num >= max_iters or eval_only)",
                         'tests/system/test_reliability.py -k always_save', "the time budget ends without an eval and save"),
    'first_mfu_window': ('core/training/report.py', "self.windows > 1", "self.windows > 0",
                         'tests/training/test_train.py -k eval_lines', "the first MFU window includes warm-up and compile"),
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
                       'tests/training/test_memory.py -k by_hand', "the planner gives each FSDP process the full weights"),
    'hopper_kernels': ('core/bench/profile.py', "'gemm', 'nvjet', ", "'gemm', ",
                       'tests/test_bench.py -k kernels', "Hopper's nvjet GEMMs land under 'other'"),
    'chunked_bf16_sum': ('model.py', "grad_w = torch.zeros_like(weight, dtype=torch.float32) if",
                         "grad_w = torch.zeros_like(weight, dtype=dtype) if",
                         'tests/training/test_memory.py -k bf16', "the chunked loss sums the head's gradient in bf16"),
    'softcap_bf16': ('model.py', "torch.tanh(logits.float() / cap)", "torch.tanh(logits / cap)",
                     'tests/training/test_memory.py -k softcap_runs', "soft-capping runs tanh on bf16 logits"),
    # --- planted-bug classes of issue 25: each caught by a test against a reference worked out by hand ---
    'sample_top_p_untempered': ('model.py', "        probs = sorted_z.softmax(dim=-1)\n",
                                "        probs = (sorted_z * t).softmax(dim=-1)\n",
                                'tests/inference/test_sampling.py', "top-p reads the untempered probabilities"),
    'sample_top_k_one_more': ('model.py', "kth = torch.topk(z, top_k).values[:, -1:]",
                              "kth = torch.topk(z, min(top_k + 1, V)).values[:, -1:]",
                              'tests/inference/test_sampling.py', "top-k keeps one token too many"),
    'sample_top_p_drops_crossing': ('model.py', "drop_sorted = (probs.cumsum(dim=-1) - probs) >= p",
                                    "drop_sorted = probs.cumsum(dim=-1) >= p", 'tests/inference/test_sampling.py',
                                    "top-p drops the token that crosses p"),
    'sample_row0_top_k': ('model.py', "k = torch.where(top_k <= 0, V, top_k.clamp(max=V))",
                          "k = torch.where(top_k[:1] <= 0, V, top_k[:1].clamp(max=V)).expand_as(top_k)",
                          'tests/inference/test_sampling.py', "every row of a batch gets row 0's top-k"),
    'sample_row0_temperature': ('model.py', "t = temperature.float().clamp(min=1e-30, max=MAX_TEMPERATURE)[:, None]",
                                "t = temperature.float().clamp(min=1e-30, max=MAX_TEMPERATURE)[:1, None]",
                                'tests/inference/test_sampling.py', "every row of a batch gets row 0's temperature"),
    'sample_top_p_unsorted': ('model.py', "drop_sorted.scatter(1, order, drop_sorted)", "drop_sorted",
                              'tests/inference/test_sampling.py', "top-p's mask lands in sorted order, not on the ids"),
    'lora_scale_inverted': ('core/training/lora.py', "self.rank, self.scale = rank, alpha / rank",
                            "self.rank, self.scale = rank, rank / alpha", 'tests/training/test_lora_formula.py',
                            "LoRA scales by r/alpha"),
    'lora_merge_unscaled': ('core/training/lora.py', "self.weight + self.scale * (self.lora_B @ self.lora_A)",
                            "self.weight + self.lora_B @ self.lora_A", 'tests/training/test_lora_formula.py',
                            "merging forgets alpha/r"),
    'lora_forward_unscaled': ('core/training/lora.py', "F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale",
                              "F.linear(F.linear(x, self.lora_A), self.lora_B)", 'tests/training/test_lora_formula.py',
                              "the adapted forward forgets alpha/r"),
    'hellaswag_mean_over_row': ('core/evaluation/hellaswag.py', "(total / (y != -1).sum(1).clamp(min=1)).cpu()",
                                "(total / y.size(1)).cpu()", 'tests/evaluation/test_hellaswag_fixture.py',
                                "acc_norm divides by the padded row, not the ending"),
    'hellaswag_acc_is_norm': ('core/evaluation/hellaswag.py', "correct += pred == ex['label']",
                              "correct += pred_norm == ex['label']", 'tests/evaluation/test_hellaswag_fixture.py',
                              "acc counts acc_norm's picks"),
    'hellaswag_no_space': ('core/evaluation/hellaswag.py', "end = tok.encode_ordinary(' ' + ending)",
                           "end = tok.encode_ordinary(ending)", 'tests/evaluation/test_hellaswag_fixture.py',
                           "endings lose their leading space"),
    'exact_mask_offset': ('core/data/loader.py', "y[row, :length][mask[s + 1:s + 1 + length] == 0] = -1",
                          "y[row, :length][mask[s:s + length] == 0] = -1", 'tests/evaluation/test_chat_eval.py',
                          "the exact eval reads the loss mask one token early"),
    'exact_counts_masked': ('core/evaluation/exact.py', "            n = int((y != -1).sum())\n",
                            "            n = y.numel()\n", 'tests/evaluation/test_chat_eval.py',
                            "the exact eval counts masked and padded targets"),
    'chat_end_unlearned': ('core/data/chat.py', "mask += [0] + [learn] * len(content) + [learn]",
                           "mask += [0] + [learn] * len(content) + [0]", 'tests/evaluation/test_chat_eval.py',
                           "the assistant's closing <|end|> is masked out"),
    'bytes_of_masked': ('core/data/loader.py', "return int((table[y.clamp(min=0)] * (y != -1)).sum())",
                        "return int(table[y.clamp(min=0)].sum())", 'tests/evaluation/test_chat_eval.py',
                        "bits per byte counts the bytes of masked targets"),
    'gguf_char_no_merges': ('core/interop/gguf.py', '            merges.append(f"{left} {right}")\n', "",
                            'tests/interop/test_gguf.py -k char', "a character vocabulary goes without its merges"),
    'gguf_q8_is_f16': ('core/interop/gguf.py', "elif dtype in ('q8_0', 'q4_0') and", "elif dtype == 'q4_0' and",
                       'tests/interop/test_gguf.py -k tensor_types', "a q8_0 file holds f16 matrices"),
    'gguf_rope_base_default': ('core/interop/gguf.py', "w.add_rope_freq_base(cfg.rope_base)",
                               "w.add_rope_freq_base(10000.0)", 'tests/interop/test_gguf.py -k rope_base',
                               "GGUF always says rope base 10000"),
    'gguf_positions_unpadded': ('core/interop/gguf.py', "            rows = gguf_context(cfg, arch)\n",
                                "            rows = len(w)\n", 'tests/interop/test_llama_cpp.py -k past_block_size',
                                "the gpt2 position table is not padded to the context it states"),
    'gguf_rope_unpermuted': ('core/interop/gguf.py', "            w = _permute_rope(w, cfg.n_head)\n",
                             "            w = w\n", 'tests/interop/test_llama_cpp.py -k "char and llama"',
                             "q and k go to llama.cpp without its rope permutation"),
    'export_leaves_temp_folders': ('core/fileio.py',
                                   "    remove_stale_temps(parent, os.path.basename(dest))  # a killed export's half folder\n", "",
                                   'tests/interop/test_gguf.py -k killed',
                                   "a killed export's temporary folder stays forever"),
    'server_id_one_past': ('core/inference/server.py', "if not all(0 <= i < tok.vocab_size for i in prompt):",
                           "if not all(0 <= i <= tok.vocab_size for i in prompt):",
                           'tests/inference/test_server_requests.py -k token_ids', "the server takes id vocab_size"),
    'server_key_prefix': ('core/inference/server.py',
                          "if not hmac.compare_digest(given.encode(), f'Bearer {api_key}'.encode()):",
                          "if not (len(given) > 7 and f'Bearer {api_key}'.startswith(given)):",
                          'tests/inference/test_server_requests.py -k api_key', "a prefix of the API key is let in"),
    'server_top_k_negative': ('core/inference/server.py', "top_k=_number(data, 'top_k', 0, 0, None, integer=True)",
                              "top_k=_number(data, 'top_k', 0, None, None, integer=True)",
                              'tests/inference/test_server_requests.py -k malformed', "top_k=-1 is served"),
    'server_top_p_above_1': ('core/inference/server.py', "top_p=float(_number(data, 'top_p', 1.0, high=1, above=0))",
                             "top_p=float(_number(data, 'top_p', 1.0, above=0))",
                             'tests/inference/test_server_requests.py -k malformed', "top_p above 1 is served"),
    'early_stop_no_reset': ('train.py', "best_val_loss, evals_without_improvement = losses['val'], 0",
                            "best_val_loss = losses['val']", 'tests/training/test_bookkeeping.py',
                            "an improvement does not reset the early-stopping count"),
    'resume_forgets_best': ('core/training/init.py',
                            "start.iter_num, start.best_val_loss = ckpt['iter_num'], ckpt['best_val_loss']",
                            "start.iter_num = ckpt['iter_num']", 'tests/training/test_bookkeeping.py -k resumed',
                            "a resumed run forgets its best val loss"),
    'resume_forgets_count': ('core/training/init.py',
                             "start.evals_without_improvement = ckpt.get('evals_without_improvement', 0)",
                             "start.evals_without_improvement = 0", 'tests/training/test_bookkeeping.py -k resumed',
                             "a resumed run forgets its early-stopping count"),
    'best_on_every_save': ('train.py', "        save_checkpoint(improved)\n", "        save_checkpoint(True)\n",
                           'tests/training/test_bookkeeping.py -k best_checkpoint', "best.pt is written at every save"),
    'lock_released_early': ('train.py', "if lora_config and merge_lora and master:",
                            "if run_lock is not None:\n    run_lock.release()\nif lora_config and merge_lora and master:",
                            'tests/training/test_bookkeeping.py -k lock', "the run lock goes before merged.pt is written"),
    'no_folder_fsync': ('core/fileio.py', "    os.replace(tmp, path)\n    fsync_dir(os.path.dirname(os.path.abspath(path)))\n",
                        "    os.replace(tmp, path)\n", 'tests/test_fileio_order.py',
                        "a rename is not made durable (no fsync of its folder)"),
    'no_parent_fsync': ('core/fileio.py', "        tmp = None\n        fsync_dir(parent)\n", "        tmp = None\n",
                        'tests/test_fileio_order.py', "a new folder's rename is not made durable"),
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
            print(f"{n:<28}{path:<30}{what}  [{tests}]")
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
                print(f"{n:<28}STALE: the code to mutate occurs {original.count(old)} times in {path}", flush=True)
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
            print(f"{n:<28}{verdict:<10}{seconds:5.0f} s  {what}  [{selection}: {tail}]",
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
