"""bench.py end to end on CPU with tiny models: the training figures as JSON, the profiler trace,
KV-cache sampling, the report tables, and one-line errors."""

import json

import pytest
import torch

from conftest import assert_one_line_error, run_script as run_any
from core import hardware
from core.bench.profile import kernel_category
from test_accounting import TINY_BENCH_FLOPS
from model import GPT, GPTConfig

TINY_BENCH = ['--device=cpu', '--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=16', '--vocab_size=50',
              '--batch_size=2', '--iters=2', '--warmup_iters=1']


def run_script(*args):
    # one thread: tiny models gain nothing from a second, and lose a lot to it on a busy machine
    return run_any(*args, env={'OMP_NUM_THREADS': '1'})


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def test_training_figures_as_json_and_a_profiler_trace(tmp_path):
    r = run_script('bench.py', *TINY_BENCH, '--json=True', '--profile=True', f'--out_dir={tmp_path}')
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    for key in ('ms_per_iter', 'tokens_per_sec', 'mfu', 'peak_flops', 'peak_memory_bytes', 'planned_memory_bytes'):
        assert out[key] > 0, key
    # the peak is a matmul in the precision the GEMMs ran in: bf16 where the CPU has it in hardware
    assert f"CPU {'bf16' if out['dtype'] == 'bfloat16' else 'fp32'} 1024x1024 matmul" in out['peak_flops_desc']
    assert out['dtype'] == ('bfloat16' if hardware.cpu_native_bf16() else 'float32')
    assert out['tokens_per_iter'] == 2 * 16
    # the figures hang together: tokens/s from ms/iter, MFU from the model's FLOPs and the peak used
    assert abs(out['tokens_per_sec'] - 32 / (out['ms_per_iter'] / 1000)) < 1e-6 * out['tokens_per_sec']
    # the FLOPs are the count worked out by hand in test_accounting.py, the MFU those over the peak
    assert out['flops_per_token'] == TINY_BENCH_FLOPS
    assert abs(out['mfu'] - TINY_BENCH_FLOPS * out['tokens_per_sec'] / out['peak_flops']) < 1e-9
    assert 0 < out['mfu_ceiling'] and abs(sum(out['time_breakdown'].values()) - 1) < 1e-6
    assert len(out['top_ops']) == 10
    with open(out['trace']) as f:
        assert 'traceEvents' in json.load(f)


def test_human_output_names_the_peak_and_where_time_goes():
    r = run_script('bench.py', *TINY_BENCH, '--shape_peak=False')
    assert r.returncode == 0, r.stderr
    for text in ('ms/iter', 'tokens/s', 'MFU', '1024x1024 matmul', 'peak memory',
                 'where the time goes', 'top 10 ops', 'matmuls'):
        assert text in r.stdout, text


def test_sample_compares_cached_and_uncached_generation():
    # 40 tokens past a 16-token window: the sliding part is exercised too
    r = run_script('bench.py', '--sample=True', '--sample_tokens=40', '--n_layer=2', '--n_head=2', '--n_embd=32',
                   '--block_size=16', '--sample_batch=2', '--device=cpu', '--json=True')
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    # identical: the exact-window mode past block_size gives nanoGPT's uncached tokens
    assert out['identical'] is True and out['new_tokens'] == 40
    assert out['cached_tokens_per_sec'] > 0 and out['uncached_tokens_per_sec'] > 0
    assert out['exact_window_tokens_per_sec'] > 0 and out['batch'] == 2 and out['batch_speedup'] > 0


def test_report_tables_for_gpt2_xl_match_the_model():
    r = run_script('bench.py', '--report=True', '--model=gpt2-xl', '--json=True')
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    with torch.device('meta'):
        xl = GPT(GPTConfig(n_layer=48, n_head=25, n_embd=1600, block_size=1024, vocab_size=50304, bias=True))
    assert out['params']['total'] == sum(p.numel() for p in xl.parameters())
    assert out['flops_per_token']['total'] == xl.flops_per_token(1024)
    assert out['memory_plan']['total'] > 4 * out['params']['total'] * 4 * 0.99  # weights, grads, 2 moments at least
    for text in ('attn.c_attn (qkv)', 'attention q.k', 'lm_head', 'memory plan', 'largest micro-batch'):
        assert text in r.stdout, text


def test_mistakes_end_in_one_line():
    assert_one_line_error(run_script('bench.py', '--report=True', '--model=gpt3'), "unknown model 'gpt3'")
    assert_one_line_error(run_script('bench.py', '--report=True', '--n_layer=many'),
                          "n_layer must be an integer, got 'many'")
    assert_one_line_error(run_script('bench.py', '--report=True', '--n_head=5', '--n_embd=32'), 'divisible')
    # a negative peak was taken as 'none given' and the CPU's measured instead
    assert_one_line_error(run_script('bench.py', '--report=True', '--peak_tflops=-1'), 'peak_tflops must be positive')
    # the configurator's choices: the same words as train.py's
    assert_one_line_error(run_script('bench.py', '--report=True', '--optimizer=sgd'),
                          "optimizer must be 'adamw' or 'muon', got 'sgd'")
    assert_one_line_error(run_script('bench.py', '--report=True', '--compile=maybe'),
                          "compile must be True, False or 'auto', got 'maybe'")


def test_the_plain_reference_is_our_gpt2_written_plainly():
    from core.bench.reference import PlainGPT, unsupported
    for bias, gelu in ((True, 'erf'), (False, 'tanh')):
        cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=11, bias=bias, gelu=gelu)
        torch.manual_seed(0)
        ours, ref = GPT(cfg), PlainGPT(cfg)
        with torch.no_grad():
            for p in ours.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        ref.load_state_dict(ours.state_dict())  # strict: the same tensors under the same names
        idx = torch.randint(0, 11, (3, 8))
        (a, la), (b, lb) = ours(idx, idx), ref(idx, idx)
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
        torch.testing.assert_close(la, lb, atol=1e-6, rtol=0)
    assert unsupported(cfg) == [] and unsupported(GPTConfig(mlp='swiglu')) == ["mlp='swiglu'"]
    with pytest.raises(RuntimeError):  # a switched model has other tensors
        PlainGPT(cfg).load_state_dict(GPT(GPTConfig(**{**cfg.to_dict(), 'mlp': 'swiglu'})).state_dict())


def test_bench_times_the_plain_reference_beside_ours():
    r = run_script('bench.py', *TINY_BENCH, '--json=True', '--breakdown=False', '--shape_peak=False')
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    assert out['reference_ms_per_iter'] > 0 and out['paired_ms_per_iter'] > 0
    assert out['speedup_vs_reference'] == out['reference_ms_per_iter'] / out['paired_ms_per_iter']


KERNELS = [
    # cuBLAS on Ampere and Hopper, CUTLASS, Hopper/Blackwell nvjet, inductor's GEMM template
    ('ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_64x3_tn', 'matmuls'),
    ('sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel',
     'matmuls'),
    ('nvjet_hsh_192x128_64x4_1x2_h_bz_coopA_NTN', 'matmuls'),
    ('void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_32x32_128x2_tn_align8>(...)', 'matmuls'),
    ('triton_tem_fused_mm_0', 'matmuls'),
    ('void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 64, 4, false, false, cutlass::bfloat16_t>>',
     'attention kernels'),
    ('fmha_cutlassB_bf16_aligned_64x64_k64_sm80', 'attention kernels'),
    ('void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::'
     'FusedAdamMathFunctor<float, 4, (at::native::ADAM_MODE)1, false>>', 'optimizer and clipping'),
    ('void at::native::multi_tensor_apply_kernel<at::native::LpNormFunctor<float, 2>>', 'optimizer and clipping'),
    ('triton_per_fused_native_layer_norm_0', 'norms'),
    ('void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<float, float, false>', 'norms'),
    ('triton_red_fused__log_softmax_nll_loss_forward_3', 'loss (softmax, cross-entropy)'),
    ('triton_poi_fused_add_gelu_5', 'elementwise, reductions, copies'),
    ('Memcpy HtoD (Pageable -> Device)', 'copies and memsets'),
]


@pytest.mark.parametrize('name, category', KERNELS, ids=[k[:40] for k, _ in KERNELS])
def test_gpu_kernels_are_categorized_by_name(name, category):
    assert kernel_category(name) == category
