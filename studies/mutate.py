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
    # --- the newest code (decode.py, engine.py's prefill groups and Sequence, search.py, server._params): planted
    # by hand, each caught by a test against the eager path, a count or a value worked out by hand ---
    'decode_mask_misses_own_slot': ('core/inference/decode.py', "mask = (seen <= at[:, None]) | (at[:, None] >= L)",
                                    "mask = (seen < at[:, None]) | (at[:, None] >= L)",
                                    'tests/inference/test_decode.py -k traced', "a compiled step does not attend its own key"),
    'decode_idle_rows_advance': ('core/inference/decode.py', "    pos.add_(live.long())\n", "    pos.add_(1)\n",
                                 'tests/inference/test_decode.py -k server_compiles',
                                 "rows sitting a compiled step out advance their position"),
    'decode_length_one_short': ('core/inference/engine.py', "else min(self.L, max(2, end))",
                                "else min(self.L, max(2, end - 1))", 'tests/inference/test_decode.py -k traced',
                                "a compiled step attends one slot fewer than the longest row has"),
    'decode_bucket_one_too_small': ('core/inference/engine.py',
                                    "hi = next(b for b in self.buckets if b > max(s.slot for s in going))",
                                    "hi = next(b for b in self.buckets if b >= max(s.slot for s in going))",
                                    'tests/inference/test_decode.py -k join', "the bucket leaves out the highest row in use"),
    'decode_greedy_graph_if_any_greedy': ('core/inference/engine.py',
                                          "greedy = self.greedy_graphs and all(s.params.temperature == 0 for s in present)",
                                          "greedy = self.greedy_graphs and any(s.params.temperature == 0 for s in present)",
                                          'tests/inference/test_decode.py -k greedy_one_is_still',
                                          "one greedy row makes its sampled neighbours greedy too"),
    'decode_attended_not_dynamic': ('core/inference/decode.py',
                                    "            if most:\n                torch._dynamo.mark_dynamic(seen, 0, min=2, max=most)\n",
                                    "", 'tests/inference/test_decode.py -k building',
                                    "the attended slots are not marked dynamic: requests compile again"),
    'decode_greedy_unmasked_vocab': ('core/inference/decode.py', "tokens = sample(logits[:, -1], 0, n_vocab=n_vocab)",
                                     "tokens = sample(logits[:, -1], 0)",
                                     'tests/inference/test_decode.py -k padded_vocabulary_ids_are_never_picked',
                                     "a compiled greedy step may pick a padded vocabulary id"),
    'decode_noise_dropped': ('core/inference/decode.py',
                             "tokens = sample(logits[:, -1], temperature, top_k, top_p, n_vocab=n_vocab, noise=noise)",
                             "tokens = sample(logits[:, -1], temperature, top_k, top_p, n_vocab=n_vocab)",
                             'tests/inference/test_decode.py -k greedy_one_is_still',
                             "a compiled sampled step ignores its rows' seeded noise"),
    'decode_graph_key_without_vocab': ('core/inference/decode.py', "graph = (id(model), key, n_vocab, None if",
                                       "graph = (id(model), key, None if",
                                       'tests/inference/test_decode.py -k two_vocabulary_sizes',
                                       "a graph traced for one vocabulary size serves another"),
    'aot_export_marks_shared_arange': ('core/inference/decode.py',
                                       "        inputs = torch.utils._pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, inputs)\n",
                                       "", 'tests/inference/test_decode.py -k building',
                                       "torch.export clears the dynamic mark of the arange every bucket shares"),
    'aot_limit_inclusive': ('core/inference/decode.py', "if weights > AHEAD_OF_TIME_MAX_BYTES:",
                            "if weights >= AHEAD_OF_TIME_MAX_BYTES:", 'tests/inference/test_decode.py -k size_limit_is_inclusive',
                            "a model of exactly the size limit is not built ahead of time"),
    'aot_keys_values_swapped': ('core/inference/decode.py', "return [c.k for c in caches] + [c.v for c in caches] + [",
                                "return [c.v for c in caches] + [c.k for c in caches] + [",
                                'tests/inference/test_decode.py -k writes_the_engine_cache',
                                "the AOTInductor runner gets the values where the keys go"),
    'prefill_group_padded_to_shortest': ('core/inference/engine.py',
                                         "c = cost[i] + (j - i) * lengths[order[j - 1]] + overhead",
                                         "c = cost[i] + (j - i) * lengths[order[i]] + overhead",
                                         'tests/inference/test_generate.py -k groups',
                                         "a group's padding is counted to its shortest prompt"),
    'prefill_window_one_short': ('core/inference/engine.py', "windows = [s.context()[-self.L:] for s in seqs]",
                                 "windows = [s.context()[-(self.L - 1):] for s in seqs]",
                                 'tests/inference/test_generate.py -k batched_greedy',
                                 "a long prompt is prefilled one token short of the window"),
    'prefill_settings_by_position': ('core/inference/engine.py', "tokens = self._sample(logits[:, -1], rows, seqs)",
                                     "tokens = self._sample(logits[:, -1], slice(0, len(seqs)), seqs)",
                                     'tests/inference/test_generate.py -k own_settings',
                                     "a prefill samples with the settings of rows 0.., not its own rows'"),
    'prefill_overhead_swapped': ('core/inference/engine.py',
                                 "PREFILL_OVERHEAD_TOKENS['cpu' if torch.device(self.device).type == 'cpu' else 'other']",
                                 "PREFILL_OVERHEAD_TOKENS['other' if torch.device(self.device).type == 'cpu' else 'cpu']",
                                 'tests/inference/test_generate.py -k groups',
                                 "a CPU prefill counts a GPU's forward cost: a burst is padded to its longest"),
    'stop_id_drops_held_text': ('core/inference/engine.py',
                                "            self.finish_reason = 'stop'\n            return self._release(self._full())\n",
                                "            self.finish_reason = 'stop'\n            return ''\n",
                                'tests/inference/test_generate.py -k stop', "a stop token loses the text held back"),
    'stop_cut_one_late': ('core/inference/engine.py', "return self._release(full[:min(hits)])",
                          "return self._release(full[:min(hits) + 1])", 'tests/inference/test_generate.py -k stop',
                          "a stop string's first character is handed out"),
    'half_character_released': ('core/inference/engine.py', "safe = full.rstrip('\\ufffd')", "safe = full",
                                'tests/inference/test_generate.py -k stop',
                                "the start of a multi-byte character is handed out as U+FFFD"),
    'length_finish_one_late': ('core/inference/engine.py', "done = len(self.out) >= self.params.max_tokens",
                               "done = len(self.out) > self.params.max_tokens",
                               'tests/inference/test_generate.py -k max_tokens', "max_tokens ends no sequence"),
    'max_tokens_one_more_step': ('core/inference/engine.py', "if s.dispatched >= s.params.max_tokens:",
                                 "if s.dispatched > s.params.max_tokens:", 'tests/inference/test_generate.py -k max_tokens',
                                 "a row runs one decode step past its max_tokens"),
    'search_tokens_per_param_linear': ('core/training/search.py', "TOKENS_PER_PARAM * math.sqrt(tokens / TOKENS_AT)",
                                       "TOKENS_PER_PARAM * tokens / TOKENS_AT", 'tests/test_plan.py -k size_rule',
                                       "the size rule's target grows with the tokens, not their square root"),
    'search_compile_gain_share': ('core/training/search.py', "head_weights / (head_weights + n_params)",
                                  "head_weights / n_params", 'tests/test_plan.py -k compile_gain',
                                  "the head's share of the weights leaves the head out of the total"),
    'search_no_compile_gain': ('core/training/search.py',
                               "return rate * compile_gain(device_type, shape[1], vocab_size, n) * seconds, n",
                               "return rate * seconds, n", 'tests/test_plan.py -k size_rule',
                               "a shape's tokens leave out the compile gain"),
    'search_pick_farthest': ('core/training/search.py', "if best is None or distance < best[0]:",
                             "if best is None or distance > best[0]:", 'tests/test_plan.py -k size_rule',
                             "the size rule picks the shape farthest from its target"),
    'search_deadline_after_one': ('core/training/search.py', "if len(rates) >= 2 and time.time() > deadline:",
                                  "if len(rates) >= 1 and time.time() > deadline:", 'tests/test_plan.py -k measuring',
                                  "past the deadline one shape is measured, leaving the rule no choice"),
    'search_bound_unchecked': ('core/training/search.py', "            if step * (bound + fit) < 0:\n                break\n",
                               "", 'tests/test_plan.py -k measuring', "a neighbour that cannot fit better is measured"),
    'search_starts_below_recipe': ('core/training/search.py',
                                   "i = max((k for k, s in enumerate(shapes) if s <= RECIPE_SHAPE), default=0)",
                                   "i = max((k for k, s in enumerate(shapes) if s < RECIPE_SHAPE), default=0)",
                                   'tests/test_plan.py -k measuring', "the measuring starts one shape below the recipe's"),
    'schedule_strict_fit': ('core/training/search.py', "if cost(n, MIN_TRIAL_SECONDS) <= share_seconds:",
                            "if cost(n, MIN_TRIAL_SECONDS) < share_seconds:", 'tests/test_plan.py -k schedule',
                            "a schedule that fills the share exactly is refused"),
    'schedule_floor_half': ('core/training/search.py', "n, k = math.ceil(n / 2), k + 1", "n, k = n // 2, k + 1",
                            'tests/test_plan.py -k schedule', "the schedule's rungs drop the odd arm"),
    'halving_keeps_worst': ('core/training/search.py', "if t.val_loss is not None), key=lambda t: t.val_loss)",
                            "if t.val_loss is not None), key=lambda t: -t.val_loss)", 'tests/test_plan.py -k halving',
                            "successive halving keeps the worse half"),
    'halving_floor_half': ('core/training/search.py', "scored[:math.ceil(len(scored) / 2)]",
                           "scored[:len(scored) // 2]", 'tests/test_plan.py -k halving',
                           "successive halving drops the middle arm of an odd rung"),
    'halving_winner_any_rung': ('core/training/search.py',
                                "return trials, min((t for t in scored if t.seconds == longest), key=lambda t: t.val_loss).arm",
                                "return trials, min(scored, key=lambda t: t.val_loss).arm",
                                'tests/test_plan.py -k halving', "the winner is the lowest loss of any rung, not the longest's"),
    'halving_ignores_overhead': ('core/training/search.py', "            expected = seconds + overhead\n",
                                 "            expected = seconds\n", 'tests/test_plan.py -k halving',
                                 "a trial whose start-up would overrun the share is started"),
    'halving_overhead_is_wall': ('core/training/search.py', "overhead = max(0.0, trial.wall - seconds)",
                                 "overhead = trial.wall", 'tests/test_plan.py -k halving',
                                 "a trial's whole wall time is counted as the next one's start-up"),
    'expected_loss_middle_point': ('core/training/search.py', "(t1, l1), (t2, l2) = points[0], points[-1]",
                                   "(t1, l1), (t2, l2) = points[0], points[1]", 'tests/test_plan.py -k expected_loss',
                                   "the power law goes through the second trial, not the longest"),
    'expected_loss_rising': ('core/training/search.py', "return l2 * (seconds / t2) ** -max(b, 0.0)",
                             "return l2 * (seconds / t2) ** -b", 'tests/test_plan.py -k expected_loss',
                             "a loss that rose with time is extrapolated to rise further"),
    'server_nan_accepted': ('core/inference/server.py', "or not isinstance(value, kinds) or value != value:",
                            "or not isinstance(value, kinds):", 'tests/inference/test_server_requests.py -k params',
                            "a NaN temperature (JSON's NaN) is served"),
    'server_max_completion_ignored': ('core/inference/server.py',
                                      "name = 'max_completion_tokens' if data.get('max_completion_tokens') is not None else 'max_tokens'",
                                      "name = 'max_tokens'", 'tests/inference/test_server_requests.py -k params',
                                      "max_completion_tokens is ignored"),
    'server_default_greedy': ('core/inference/server.py', "temperature=float(_number(data, 'temperature', 1.0, 0, 2))",
                              "temperature=float(_number(data, 'temperature', 0.0, 0, 2))",
                              'tests/inference/test_server_requests.py -k params',
                              "a request without a temperature is greedy (OpenAI's default is 1)"),
    'server_chat_drops_stop': ('core/inference/server.py',
                               "params.stop = tuple(dict.fromkeys(params.stop + tuple(stops)))",
                               "params.stop = tuple(stops)", 'tests/inference/test_serve.py -k own_stop_strings',
                               "a chat request's own stop strings are dropped"),
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
