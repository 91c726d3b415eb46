"""The CUDA paths, run on a real GPU: bf16 and fp16 training through train.py, torch.compile, fused AdamW,
flash attention, the memory planner against torch.cuda.max_memory_allocated, bench.py on GPT-2 124M, and
DDP/FSDP2 over NCCL (one process per GPU; with a single GPU, one process, which still runs NCCL, the
LOCAL_RANK device and FSDP's mixed precision). Every test skips itself without CUDA; on one H200 the file
takes about two minutes."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY, assert_one_line_error, run_script

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GPU = [a for a in TINY if a not in ('--device=cpu', '--compile=False')] + ['--device=cuda']
LOSS = re.compile(r'^iter (\d+): loss (\S+),', re.M)


def losses(stdout):
    return [float(v) for _, v in LOSS.findall(stdout)]


def train(char_data, out, *args, timeout=300):
    r = run_script('train.py', f'--dataset={char_data}', f'--out_dir={out}', *GPU, *args, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def capability():
    return torch.cuda.get_device_capability(0)


def test_auto_picks_bf16_and_compile_by_compute_capability(char_data, tmp_path):
    from core import hardware
    want = 'bfloat16' if capability() >= (8, 0) else 'float16'
    assert hardware.pick_dtype('auto', 'cuda') == want
    out = train(char_data, tmp_path, '--max_iters=30', '--eval_interval=30', '--compile=False')
    assert f'dtype {want}' in out
    got = losses(out)
    assert len(got) == 30 and all(v == v for v in got) and sum(got[-5:]) < sum(got[:5]) - 5 * 0.2, got
    ckpt = torch.load(os.path.join(tmp_path, 'ckpt.pt'), weights_only=True)
    assert 'cuda_device' in ckpt['rng']  # this GPU's generator, restorable on a machine with fewer GPUs


def test_fp16_trains_with_the_grad_scaler(char_data, tmp_path):
    out = train(char_data, tmp_path, '--max_iters=20', '--eval_interval=20', '--compile=False', '--dtype=float16')
    got = losses(out)
    assert 'dtype float16' in out and len(got) == 20 and sum(got[-5:]) < sum(got[:5]), got
    ckpt = torch.load(os.path.join(tmp_path, 'ckpt.pt'), weights_only=True)
    assert ckpt['scaler']['scale'] > 0  # the scaler's state travels with the checkpoint


def test_compiled_training_saves_plain_names_and_resumes(char_data, tmp_path):
    out = train(char_data, tmp_path, '--max_iters=6', '--eval_interval=3', '--compile=True')
    assert 'compiling the model' in out and 'compile True' in out
    ckpt = torch.load(os.path.join(tmp_path, 'ckpt.pt'), weights_only=True)
    assert ckpt['model'] and not any(k.startswith('_orig_mod.') for k in ckpt['model'])
    out = train(char_data, tmp_path, '--max_iters=8', '--eval_interval=4', '--compile=True', '--init_from=resume')
    assert 'resumed from' in out and 'step 8:' in out


def test_compiled_model_matches_eager():
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=128)).cuda()
    x = torch.randint(0, 128, (4, 64), device='cuda')
    with torch.autocast('cuda', torch.bfloat16):
        _, eager = model(x, x)
        _, compiled = torch.compile(model)(x, x)
    assert torch.allclose(eager.float(), compiled.float(), rtol=2e-2), (eager, compiled)


def test_fused_adamw_steps_like_the_plain_loop():
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=64, block_size=32, vocab_size=128)
    a, b = GPT(cfg).cuda(), GPT(cfg).cuda()
    b.load_state_dict(a.state_dict())
    fused = a.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cuda')
    assert fused.defaults['fused'] is True
    plain = torch.optim.AdamW([{'params': g['params'], 'weight_decay': g['weight_decay']}
                               for g in b.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu').param_groups],
                              lr=1e-3, betas=(0.9, 0.95), foreach=False)
    x = torch.randint(0, 128, (4, 32), device='cuda')
    for model, opt in ((a, fused), (b, plain)):
        for _ in range(3):
            model(x, x)[1].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-5), name


@pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.get_device_capability(0) < (8, 0),
                    reason="flash attention needs compute capability 8.0")
def test_flash_attention_runs_the_model():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=256, block_size=256, vocab_size=128)).cuda()
    x = torch.randint(0, 128, (4, 256), device='cuda')
    with torch.autocast('cuda', torch.bfloat16):
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # raises if flash cannot take these inputs
            _, loss = model(x, x)
        loss.backward()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:  # the default is flash too
            model(x, x)[1].backward()
            torch.cuda.synchronize()
    names = [e.name.lower() for e in prof.events()]
    assert any('flash' in n for n in names), sorted(set(names))[:40]


def test_planner_matches_max_memory_allocated_within_15_percent():
    from core import hardware
    from core.training import planner
    sys.path.insert(0, os.path.join(REPO, 'studies'))
    import importlib.util
    spec = importlib.util.spec_from_file_location('bench_memory', os.path.join(REPO, 'studies', 'bench_memory.py'))
    bench_memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_memory)
    from model import GPTConfig
    model_args = dict(n_layer=6, n_head=6, n_embd=384, block_size=512, vocab_size=8192, bias=False)
    dtype = hardware.pick_dtype('auto', 'cuda')
    for batch, options in ((8, {}), (8, dict(gradient_accumulation_steps=2, optimizer='muon')),
                           (4, dict(chunked_ce=True, activation_checkpointing=True))):
        measured = bench_memory.measure(dict(name='t', model=model_args, batch_size=batch, options=options, steps=2,
                                             device='cuda', dtype=dtype, mode='cuda'))
        plan = planner.estimate_training_memory(GPTConfig(**model_args), batch, dtype=dtype, device_type='cuda',
                                                fused_attention=hardware.fused_attention('cuda', dtype), **options)
        assert abs(plan['total'] / measured - 1) < 0.15, (options, plan['total'], measured, plan['phase'])


def test_bench_gpt2_reports_mfu_and_a_breakdown_without_double_counting():
    r = run_script('bench.py', '--model=gpt2', '--batch_size=8', '--iters=5', '--warmup_iters=2', '--compile=False',
                   '--json=True', timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out['dtype'] == ('bfloat16' if capability() >= (8, 0) else 'float16')
    name = torch.cuda.get_device_name(0)
    from core import hardware
    if hardware.gpu_peak_entry(name)[0]:
        assert 0.02 < out['mfu'] < 1.0, out
    else:
        assert out['mfu'] is None and 'MFU n/a' in out['peak_flops_desc']
    # kernels on one stream cannot take longer than the steps that ran them; counting a CPU op's device time
    # and its kernels' would come out near twice the step time
    assert out['profiled_seconds'] < 3 * out['ms_per_iter'] / 1000 * 1.1, out
    assert out['time_breakdown'].get('matmuls', 0) > 0.3, out['time_breakdown']
    assert out['time_breakdown'].get('optimizer and clipping', 0) > 0, out['time_breakdown']


def test_missing_gpu_is_one_line(char_data, tmp_path):
    r = run_script('train.py', f'--dataset={char_data}', f'--out_dir={tmp_path}', *GPU[:-1],
                   f'--device=cuda:{torch.cuda.device_count()}', '--max_iters=1')
    assert_one_line_error(r, f'cuda:{torch.cuda.device_count()}', 'GPU')


def torchrun(n, *args):
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={n}',
                           os.path.join(REPO, 'train.py'), *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300)


@pytest.mark.parametrize('fsdp', [False, True], ids=['ddp', 'fsdp'])
def test_nccl_training_on_every_gpu(char_data, tmp_path, fsdp):
    n = min(torch.cuda.device_count(), 2)
    args = [f'--dataset={char_data}', f'--out_dir={tmp_path}', *GPU, '--compile=False', '--max_iters=6',
            '--eval_interval=3', f'--fsdp={fsdp}', '--gradient_accumulation_steps=2', '--dropout=0.1',
            '--device=cuda:0']  # cuda:0 is overridden by each rank's LOCAL_RANK
    r = torchrun(n, *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f'tokens per iteration: {4 * 32 * 2}' in r.stdout
    if n > 1:
        assert 'ignored under torchrun' in r.stdout
    got = losses(r.stdout)
    assert len(got) == 6 and all(v == v for v in got), got
    r = torchrun(n, *args[:-1], '--max_iters=8', '--init_from=resume')
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert 'resumed from' in r.stdout


def test_compiled_planner_matches_max_memory_allocated_within_15_percent():
    from core import hardware
    from core.training import planner
    import importlib.util
    spec = importlib.util.spec_from_file_location('bench_memory', os.path.join(REPO, 'studies', 'bench_memory.py'))
    bench_memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_memory)
    from model import GPTConfig
    model_args = dict(n_layer=4, n_head=4, n_embd=256, block_size=512, vocab_size=50304)
    dtype = hardware.pick_dtype('auto', 'cuda')
    for options in ({}, dict(chunked_ce=True)):
        measured = bench_memory.measure(dict(name='t', model=model_args, batch_size=8, options=dict(options, compile=True),
                                             steps=2, device='cuda', dtype=dtype, mode='cuda'))
        plan = planner.estimate_training_memory(GPTConfig(**model_args), 8, dtype=dtype, device_type='cuda',
                                                compiled=True, fused_attention=hardware.fused_attention('cuda', dtype),
                                                **options)
        assert abs(plan['total'] / measured - 1) < 0.15, (options, plan['total'], measured, plan['phase'])


def test_the_peak_of_this_gpu_is_its_own_entry():
    # MFU is quoted against the data sheet of the exact part: an H100 or H200 must find its own row (SXM, PCIe, NVL)
    from core import hardware
    name = torch.cuda.get_device_name(0)
    key, figures = hardware.gpu_peak_entry(name)
    for part in ('H100', 'H200'):
        if part in name.split():
            form = next((f for f in ('NVL', 'PCIe') if f in name), None)
            assert key == (f'{part} {form}' if form else part), (name, key)
            assert figures['bf16'] == {None: 989, 'NVL': 835, 'PCIe': 756}[form]


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability(0) < (8, 9),
                    reason="FP8 tensor cores need compute capability 8.9")
def test_fp8_trains_close_to_bf16_compiled():
    from core.training import fp8
    from model import GPT, GPTConfig
    if fp8.torchao_float8() is None:
        pytest.skip("torchao is not installed")
    fp8.check(True, 'cuda', 'bfloat16')
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=2, n_head=4, n_embd=256, block_size=256, vocab_size=512)
    plain, ours = GPT(cfg).cuda(), GPT(cfg).cuda()
    ours.load_state_dict(plain.state_dict())
    assert len(fp8.convert(ours)) == 8 and fp8.converted(ours)
    x = torch.randint(0, 512, (8, 256), device='cuda')
    losses = {}
    for label, m in (('bf16', plain), ('fp8', ours)):
        with torch.autocast('cuda', torch.bfloat16):
            losses[label] = torch.compile(m)(x, x)[1].item()
    assert losses['fp8'] == pytest.approx(losses['bf16'], rel=2e-2), losses


def test_fp8_check_follows_this_gpus_compute_capability():
    from core.errors import UserError
    from core.training import fp8
    if torch.cuda.get_device_capability(0) < (8, 9):
        with pytest.raises(UserError, match='compute capability 8.9'):
            fp8.check(True, 'cuda', 'bfloat16')
    elif fp8.torchao_float8() is not None:
        fp8.check(True, 'cuda', 'bfloat16')
