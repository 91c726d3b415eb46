"""Memory: the savers give the plain path's loss and gradients, the planner predicts measured peaks,
batch_size='auto' keeps the tokens per step, and an out-of-memory error ends in one useful line."""

import json
import os
import subprocess
import sys

import pytest
import torch

from core.errors import UserError
from core.training import planner
from conftest import REPO, TINY, assert_one_line_error, run_script
from model import GPT, GPTConfig, loss_chunk_rows

SAVER_SWITCHES = [
    {},
    dict(prenorm=False, logit_softcap=10.0),
    dict(norm='rmsnorm', pos_encoding='rope', mlp='swiglu', qk_norm=True, tie_embeddings=False),
    dict(dropout=0.1),
    dict(mup=True, mup_base_width=16, logit_softcap=10.0),  # muP's output multiplier (1/2 at width 32) under the cap
]


def grads_of(model, idx, targets, seed=0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # the same dropout masks on every path
    _, loss = model(idx, targets)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize('switch', SAVER_SWITCHES, ids=['gpt2', 'postnorm-softcap', 'modern', 'dropout', 'mup'])
def test_savers_give_the_plain_loss_and_gradients(switch):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=24, vocab_size=71, n_layer=2, n_head=2, n_embd=32, **switch)).train()
    idx = torch.randint(0, 71, (3, 24))
    targets = torch.randint(0, 71, (3, 24))
    targets[0, :5] = -1  # ignored positions count neither in the mean nor in the gradient
    ref_loss, ref = grads_of(model, idx, targets)
    for chunked, ckpt in ((True, False), (False, True), (True, True)):
        model.chunked_ce, model.activation_checkpointing = chunked, ckpt
        loss, grads = grads_of(model, idx, targets)
        assert torch.allclose(loss, ref_loss, rtol=1e-5, atol=1e-6), (chunked, ckpt)
        for name, g in grads.items():
            assert torch.allclose(g, ref[name], rtol=1e-4, atol=1e-6), (name, chunked, ckpt)
    model.chunked_ce = model.activation_checkpointing = False


def test_logits_come_back_without_their_graph():
    # a compiled model would otherwise hand its backward a zero-filled gradient the size of the logits
    # (a third of the loss's memory, see test_planner_predicts_a_compiled_cpu_peak_within_15_percent)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=32))
    x = torch.randint(0, 32, (2, 8))
    logits, loss = model(x, x)
    assert not logits.requires_grad and loss.requires_grad
    assert torch.equal(logits, model.head(model.hidden_states(x)))


def test_chunked_loss_uses_several_chunks_and_any_chunk_size():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=50, n_layer=1, n_head=2, n_embd=16))
    x = torch.randn(4, 16, 16)
    targets = torch.randint(0, 50, (4, 16))
    plain = torch.nn.functional.cross_entropy(model.head(x).view(-1, 50), targets.view(-1))
    for rows in (None, 1, 7, 64, 1000):
        assert torch.allclose(model.chunked_loss(x, targets, rows), plain, rtol=1e-5)
    assert loss_chunk_rows(64, 50) == 8  # eight chunks at least
    assert loss_chunk_rows(4 * 1024, 50304) == 512  # 8 chunks of 103 MiB fp32 logits
    assert loss_chunk_rows(64 * 1024, 50304) == 667  # capped at 2^25 logits per chunk


def test_chunked_loss_under_bf16_sums_the_head_gradient_in_fp32():
    # 32 chunks: summed in bf16 (one shared autocast cast of the weight) the head's gradient drifts 2.5x
    # further from the fp32 one than the unchunked path's; cast per chunk it is as close
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=64, block_size=64, vocab_size=512, logit_softcap=30.0))
    x, targets = torch.randn(2048, 64), torch.randint(0, 512, (2048,))

    def head_grad(chunked, autocast=True):
        model.zero_grad(set_to_none=True)
        with torch.autocast('cpu', torch.bfloat16, enabled=autocast):
            loss = model.chunked_loss(x, targets, 64) if chunked else \
                torch.nn.functional.cross_entropy(model.head(x).float(), targets)
        loss.backward()
        return model.lm_head.weight.grad.clone()
    ref = head_grad(False, autocast=False)
    err = lambda g: ((g - ref).norm() / ref.norm()).item()
    assert err(head_grad(True)) < 1.2 * err(head_grad(False))


def test_softcap_runs_in_fp32_under_autocast():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=64, logit_softcap=2.0))
    x = torch.randn(4, 32) * 4
    with torch.autocast('cpu', torch.bfloat16):
        logits = model.head(x)
        raw = model.lm_head(x)
    assert logits.dtype == torch.float32
    assert torch.equal(logits, 2.0 * torch.tanh(raw.float() / 2.0))


def measure(model_args, batch, options=None, steps=2):
    """Peak memory of real training steps in a fresh process (bench_memory.py's child)."""
    job = dict(name='test', model=model_args, batch_size=batch, options=options or {}, steps=steps, device='cpu',
               dtype='float32', mode='rss')
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', OMP_NUM_THREADS='1')
    r = subprocess.run([sys.executable, os.path.join(REPO, 'studies', 'bench_memory.py'), f'--child={json.dumps(job)}'],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('model_args,batch,options', [
    (dict(n_layer=2, n_head=4, n_embd=128, block_size=128, vocab_size=16384), 8, {}),
    (dict(n_layer=3, n_head=4, n_embd=128, block_size=128, vocab_size=4096, pos_encoding='rope', mlp='swiglu'), 8,
     dict(activation_checkpointing=True, chunked_ce=True)),
], ids=['plain', 'savers'])
def test_planner_predicts_the_measured_cpu_peak(model_args, batch, options):
    measured = measure(model_args, batch, options)
    plan = planner.estimate_training_memory(GPTConfig(**model_args), batch, device_type='cpu', **options)
    assert abs(plan['total'] / measured - 1) < 0.15, (plan, measured)


def alloc_peak(model_args, batch, options):
    """Peak bytes of live tensors over 2 training steps, summed from the profiler's allocation events
    (bench_memory.py's 'alloc' mode), in this process: exact, and free of allocator slack."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('bench_memory', os.path.join(REPO, 'studies', 'bench_memory.py'))
    bench_memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_memory)
    return bench_memory.measure(dict(name='test', model=model_args, batch_size=batch, options=options, steps=2,
                                     device='cpu', dtype='float32', mode='alloc'))


# configs where the logits are small, so parameters, gradients, optimizer state and activations decide
# the peak and a component counted twice or forgotten moves the total by more than the tolerance
@pytest.mark.parametrize('model_args,batch,options,phase', [
    (dict(n_layer=2, n_head=4, n_embd=256, block_size=16, vocab_size=256), 1, {}, 'backward'),
    (dict(n_layer=2, n_head=4, n_embd=128, block_size=64, vocab_size=65, dropout=0.1), 8,
     dict(gradient_accumulation_steps=2), 'backward'),
    (dict(n_layer=2, n_head=4, n_embd=256, block_size=32, vocab_size=65, mlp='relu2'), 2,
     dict(optimizer='muon', gradient_accumulation_steps=2), 'optimizer step'),
], ids=['weights-dominate', 'accumulation-dropout', 'muon-accumulation'])
def test_planner_predicts_live_tensor_peaks_within_8_percent(model_args, batch, options, phase):
    measured = alloc_peak(model_args, batch, options)
    plan = planner.estimate_training_memory(GPTConfig(**model_args), batch, device_type='cpu', **options)
    assert phase in plan['phase']
    assert abs(plan['total'] / measured - 1) < 0.08, (plan['total'], measured, plan['phase'])


# torch.compile'd steps on the CPU: what the compiled graph keeps is what the partitioner decides, the same on a
# GPU; 'small' has GPT-2's vocabulary in bf16, where the returned logits' zero-filled gradient is a third of the peak
@pytest.mark.parametrize('model_args,batch,dtype', [
    (dict(n_layer=2, n_head=4, n_embd=128, block_size=64, vocab_size=65, bias=False), 12, 'float32'),
    (dict(n_layer=2, n_head=4, n_embd=256, block_size=512, vocab_size=50304), 2, 'bfloat16'),
], ids=['tiny', 'small-bf16'])
def test_planner_predicts_a_compiled_cpu_peak_within_15_percent(model_args, batch, dtype):
    import importlib.util
    spec = importlib.util.spec_from_file_location('bench_memory', os.path.join(REPO, 'studies', 'bench_memory.py'))
    bench_memory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_memory)
    measured = bench_memory.measure(dict(name='test', model=model_args, batch_size=batch, options=dict(compile=True),
                                         steps=2, device='cpu', dtype=dtype, mode='alloc'))
    plan = planner.estimate_training_memory(GPTConfig(**model_args), batch, dtype=dtype, device_type='cpu',
                                            compiled=True)
    assert abs(plan['total'] / measured - 1) < 0.15, (plan['total'], measured, plan['phase'])


def test_planner_components_by_hand():
    from core.training.accounting import param_counts
    cfg = GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=96, tie_embeddings=False)
    counts = param_counts(cfg)
    n, n_matrix = counts['total'], counts['qkv'] + counts['attn_proj'] + counts['mlp']
    est = lambda **kw: planner.estimate_training_memory(cfg, 4, device_type='cpu', **kw)['moments']
    step = est()['optimizer step']
    assert (step['params'], step['grads'], step['optimizer']) == (4 * n, 4 * n, 8 * n)
    assert step['ddp_buckets'] == 0 and est(ddp=True)['optimizer step']['ddp_buckets'] == 4 * n
    muon = est(optimizer='muon')['optimizer step']
    assert muon['optimizer'] == 4 * n_matrix + 8 * (n - n_matrix)  # momentum; AdamW's two moments for the rest
    # without accumulation no gradient exists when the backward starts, and they grow block by block to
    # the full set; with it, the previous micro-steps' gradients are there from the start
    moments = est()
    assert moments['loss backward']['grads'] == 0
    grown = [moments[f'block {i} backward']['grads'] for i in (1, 0)] + [moments['embedding backward']['grads']]
    assert grown == sorted(grown) and grown[-1] == 4 * n and grown[0] < 4 * n
    accumulating = est(gradient_accumulation_steps=2)
    assert all(m['grads'] == 4 * n for m in accumulating.values())
    # FSDP over 4 processes in bf16: a quarter of the fp32 state each, the root's weights and two blocks
    # gathered in bf16 during the backward, one block's unsharded gradient with its fp32 copy; none at the step
    block = n_matrix // 2 + counts['norm'] // 5 * 2
    fsdp = est(fsdp_world_size=4, dtype='bfloat16')
    assert (fsdp['optimizer step']['params'], fsdp['optimizer step']['grads']) == (n, n)
    assert fsdp['optimizer step']['optimizer'] == 2 * n and fsdp['optimizer step']['fsdp_gathered'] == 0
    assert fsdp['loss backward']['fsdp_gathered'] == 2 * (n - 2 * block) + 2 * 2 * block + (2 + 4) * block
    assert fsdp['loss backward']['autocast_copies'] == 0  # the gathered weights are bf16 already


LOSS_PEAK = r'''
import resource, sys, torch
from model import GPT, GPTConfig, loss_chunk_rows
torch.manual_seed(0)
model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=64, block_size=1024, vocab_size=50304, bias=False))
model.chunked_ce = sys.argv[1] == 'chunked'
x = torch.randn(1, 1024, 64, requires_grad=True)
targets = torch.randint(0, 50304, (1, 1024))
def loss_step():
    if model.chunked_ce:
        loss = model.chunked_loss(x, targets)
    else:
        logits = model.head(x)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1))
    loss.backward()
loss_step()  # the weight's gradient now exists in both runs, and the kernels are loaded
with open('/proc/self/statm') as f:
    before = int(f.read().split()[1]) * 4096
try:  # reset the high-water mark, so the warm-up step's own peak cannot count
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    reset = True
except OSError:
    reset = False
loss_step()
if reset:
    with open('/proc/self/status') as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmHWM:'))
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(peak - before)
'''


def test_chunked_loss_cuts_the_loss_peak_4x_at_gpt2_vocab():
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536', PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    peaks = {}
    for mode in ('plain', 'chunked'):
        r = subprocess.run([sys.executable, '-c', LOSS_PEAK, mode], capture_output=True, text=True, env=env,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        peaks[mode] = int(r.stdout.strip().splitlines()[-1])
    # plain: the (1024, 50304) fp32 logits, log-softmax and two gradients of that size, ~200 MiB each
    assert peaks['plain'] > 3 * 1024 * 50304 * 4
    assert peaks['plain'] >= 4 * peaks['chunked'], peaks


def test_auto_batch_keeps_rows_and_divides_them():
    plan = lambda b, acc: 1000 * b + (500 if acc > 1 else 0)
    assert planner.auto_batch(plan, 48, 10 ** 9, 'cuda') == (48, 1)
    b, acc = planner.auto_batch(plan, 48, 20_000 / 0.9, 'cuda')  # 19 rows fit: 16 is the largest divisor of 48
    assert (b, acc) == (16, 3)
    assert planner.auto_batch(plan, 48, 100, 'cuda') == (0, 0)
    assert planner.fit_batch_size(lambda b: 3 * b, 100) == 33


def test_train_auto_batch_size_runs_and_keeps_tokens_per_step(char_data, tmp_path):
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=65, bias=False)
    # a budget where 4 rows fit with accumulation and 8 do not: 8 rows per step become 4 x 2
    budget = planner.estimate_training_memory(GPTConfig(**args), 4, gradient_accumulation_steps=2)['total']
    assert planner.estimate_training_memory(GPTConfig(**args), 8, gradient_accumulation_steps=2)['total'] > budget * 1.1
    gib = budget * 1.05 / planner.SAFETY['cpu'] / 2 ** 30
    r = run_script('train.py', f'--dataset={char_data}', f'--out_dir={tmp_path}', *TINY, '--batch_size=auto',
                   '--gradient_accumulation_steps=2', '--max_iters=2', '--eval_interval=2',
                   f'--memory_budget_gb={gib!r}', env={'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr
    # the tokens kept are those of the batch_size given before 'auto' (TINY's 4) x 2 micro-steps
    assert 'batch_size auto: 4 x 2 micro-steps' in r.stdout, r.stdout
    assert 'tokens per iteration: 256 ' in r.stdout, r.stdout
    assert 'memory estimate per process:' in r.stdout and 'training FLOPs:' in r.stdout


OOM_RUNNER = r'''
import runpy, sys, torch
import model
def forward(self, *args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 65.00 GiB")
model.GPT.forward = forward
sys.argv = ['train.py'] + sys.argv[1:]
runpy.run_path('train.py', run_name='__main__')
'''


def test_out_of_memory_ends_in_one_line_with_a_batch_that_fits(char_data, tmp_path):
    r = subprocess.run([sys.executable, '-c', OOM_RUNNER, f'--dataset={char_data}', f'--out_dir={tmp_path}', *TINY,
                        '--batch_size=8', '--gradient_accumulation_steps=2', '--max_iters=2', '--eval_interval=100'],
                       capture_output=True, text=True, cwd=REPO, timeout=300,
                       env=dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1'))
    line = assert_one_line_error(r, 'out of memory', 'estimated peak', '--batch_size=4',
                                 '--gradient_accumulation_steps=4')
    assert 'keeps the 512 tokens per step' in line


def test_oom_message_suggests_what_fits():
    plan = lambda b, acc: 10 * 2 ** 30 * b // 64 + 2 ** 30
    msg = planner.oom_message(plan, 64, 1024, 1, 40 * 2 ** 30, 'cuda:0')
    # 64 rows need 11 GiB; 40 GiB at 90% fits 64 by the plan, so it halves: 32 x 2
    assert '--batch_size=32 --gradient_accumulation_steps=2' in msg and '65,536 tokens' in msg
    msg = planner.oom_message(plan, 512, 1024, 1, 40 * 2 ** 30, 'cuda:0')
    assert '--batch_size=128 --gradient_accumulation_steps=4' in msg  # 224 rows fit, 128 divides 512


def test_auto_batch_keeps_the_configured_sequences_per_step():
    from core.training import memory
    defaults, extra = {'batch_size': 12, 'n_layer': 2}, {'batch_size': ('auto',)}
    assert memory.configured_batch_size(['--batch_size=auto', '--n_layer=3'], defaults, extra) == 12
    assert memory.configured_batch_size(['--batch_size=8', "--batch_size='auto'"], defaults, extra) == 8
    plan = lambda b, a: {'total': b * 1000}  # 1000 bytes a sequence
    said = []
    b, a = memory.auto_batch_size(plan, 8, 2, 16, 100_000, 'cpu', 1, said.append)
    assert b * a == 16 and b * 1000 <= 100_000 * planner.SAFETY['cpu'] and said
    b, a = memory.auto_batch_size(plan, 8, 2, 16, 6000 / planner.SAFETY['cpu'], 'cpu', 1, said.append)
    assert b * a == 16 and b <= 6
    with pytest.raises(UserError, match='do not split over 3 processes'):
        memory.auto_batch_size(plan, 8, 2, 16, 100_000, 'cpu', 3)
    with pytest.raises(UserError, match='not even one sequence'):
        memory.auto_batch_size(plan, 8, 2, 16, 10, 'cpu', 1)


def test_auto_batch_gives_each_process_its_share_and_budgets_are_in_gib():
    from core.training import memory
    plan = lambda b, a: {'total': b * 1000}
    # 2 micro-steps of 8 sequences is 16 a step; over 2 DDP processes each runs 8 of them
    b, a = memory.auto_batch_size(plan, 8, 2, 16, 100_000, 'cpu', 2, lambda *_: None)
    assert b * a == 8
    b, a = memory.auto_batch_size(plan, 8, 2, 16, 100_000, 'cpu', 4, lambda *_: None)
    assert b * a == 4
    # memory_budget_gb is in GiB, the unit memory and nvidia-smi report (1.5 GiB = 1,610,612,736 bytes)
    assert memory.budget(None, 'cpu', 1.5) == 1_610_612_736
