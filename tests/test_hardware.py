"""Device choices on GPUs this machine does not have: compute capability, name and count are faked, and
dtype, compile, attention kind, the MFU peak, device selection and the RNG restore are checked against
what each GPU generation supports (data sheets, torch's kernel requirements)."""

import pytest
import torch

from core import hardware
from core.training import checkpoint
from core.training import planner
from core.errors import UserError
from model import GPTConfig


@pytest.fixture
def fake_gpu(monkeypatch):
    """Make torch.cuda report a GPU: fake_gpu(capability, name, count)."""
    calls = {'set_device': []}

    def install(capability=(9, 0), name='NVIDIA H100 80GB HBM3', count=1):
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
        monkeypatch.setattr(torch.cuda, 'device_count', lambda: count)
        monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: name)
        # torch's own check counts emulated bf16 as supported on every GPU since 7.0: it must not decide
        monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)
        monkeypatch.setattr(torch.cuda, 'set_device', lambda d: calls['set_device'].append(d))
        monkeypatch.setattr(torch.version, 'hip', None)
        monkeypatch.setattr(hardware, 'has_triton', lambda: True)  # a Linux CUDA wheel brings Triton
        return calls
    return install


@pytest.mark.parametrize('capability, dtype, compiled, fused_bf16, fused_fp16', [
    ((6, 0), 'float16', False, False, True),   # P100: no bf16, no Triton
    ((7, 0), 'float16', True, False, True),    # V100
    ((7, 5), 'float16', True, False, True),    # T4
    ((8, 0), 'bfloat16', True, True, True),    # A100
    ((8, 9), 'bfloat16', True, True, True),    # L4, RTX 4090
    ((9, 0), 'bfloat16', True, True, True),    # H100, H200
    ((10, 0), 'bfloat16', True, True, True),   # B200
])
def test_dtype_compile_and_attention_follow_the_compute_capability(fake_gpu, capability, dtype, compiled,
                                                                   fused_bf16, fused_fp16):
    fake_gpu(capability)
    assert hardware.pick_dtype('auto', 'cuda') == dtype
    assert hardware.pick_compile('auto', 'cuda') is compiled
    with pytest.MonkeyPatch.context() as m:  # Windows' CUDA wheels come without Triton: auto stays off
        m.setattr(hardware, 'has_triton', lambda: False)
        assert hardware.pick_compile('auto', 'cuda') is False
    assert hardware.fused_attention('cuda', 'bfloat16') is fused_bf16
    assert hardware.fused_attention('cuda', 'float16') is fused_fp16
    # the planner saves the (T x T) weights where no fused kernel runs
    cfg = GPTConfig(n_layer=2, n_head=4, n_embd=128, block_size=256, vocab_size=512)
    plan = planner.estimate_training_memory(cfg, 4, dtype='bfloat16', device_type='cuda',
                                            fused_attention=hardware.fused_attention('cuda', 'bfloat16'))
    fused = planner.estimate_training_memory(cfg, 4, dtype='bfloat16', device_type='cuda', fused_attention=True)
    assert plan['attention'] == ('flash' if fused_bf16 else 'math')
    if not fused_bf16:  # the 4 heads' 256 x 256 weights of 4 rows in 16 bits, per block, less the log-sum-exp
        assert plan["per_layer"] - fused["per_layer"] == 4 * 256 * 4 * (256 * 2 - 4)


def test_compile_on_a_gpu_below_7_is_one_line(fake_gpu):
    fake_gpu((6, 1), 'NVIDIA GeForce GTX 1080 Ti')
    with pytest.raises(UserError, match=r'compute capability 7\.0.*6\.1.*--compile=False'):
        hardware.pick_compile(True, 'cuda')
    assert hardware.pick_compile(False, 'cuda') is False


def test_cpu_defaults():
    assert hardware.pick_dtype('auto', 'cpu') == 'float32'
    assert hardware.pick_compile('auto', 'cpu') is False
    assert hardware.pick_compile(True, 'cpu') is True
    # eval.py and sample.py ask without training: the line said "for training" to them too
    with pytest.raises(UserError, match='^float16 autocast is not supported on a CPU; use --dtype=bfloat16'):
        hardware.pick_dtype('float16', 'cpu')
    with pytest.raises(UserError, match='^float16 autocast is not supported for training on a CPU'):
        hardware.pick_dtype('float16', 'cpu', training=True)


# name as torch.cuda.get_device_name reports it, dtype, TFLOP/s from the vendor's data sheet (dense)
PEAKS = [
    ('NVIDIA H200 NVL', 'bfloat16', 835), ('NVIDIA H200', 'bfloat16', 989), ('NVIDIA H200', 'float32', 494),
    ('NVIDIA H100 80GB HBM3', 'bfloat16', 989), ('NVIDIA H100 PCIe', 'bfloat16', 756),
    ('NVIDIA H100 NVL', 'float16', 835), ('NVIDIA H800', 'bfloat16', 989), ('NVIDIA H20', 'bfloat16', 148),
    ('NVIDIA GH200 480GB', 'bfloat16', 989),
    ('NVIDIA A100-SXM4-80GB', 'bfloat16', 312), ('NVIDIA A100-SXM4-40GB', 'float32', 156),
    ('NVIDIA A10', 'bfloat16', 125), ('NVIDIA A10G', 'bfloat16', 70), ('NVIDIA A40', 'bfloat16', 149.7),
    ('NVIDIA A30', 'bfloat16', 165), ('NVIDIA L4', 'bfloat16', 121), ('NVIDIA L40S', 'bfloat16', 362),
    ('NVIDIA B200', 'bfloat16', 2250), ('NVIDIA B300 SXM6 AC', 'bfloat16', 2250),
    ('AMD Instinct MI300X', 'bfloat16', 1307.4), ('NVIDIA GeForce RTX 4090', 'bfloat16', 165),
    # Volta and Turing: fp16 tensor cores, but no TF32 and no bf16 units
    ('Tesla V100-SXM2-16GB', 'float16', 125), ('Tesla V100-SXM2-16GB', 'float32', 15.7),
    ('Tesla V100-SXM2-16GB', 'bfloat16', 15.7), ('Tesla V100-PCIE-32GB', 'float16', 112),
    ('Tesla T4', 'float16', 65), ('Tesla T4', 'float32', 8.1),
]


@pytest.mark.parametrize('name, dtype, tflops', PEAKS, ids=[f'{n}-{d}' for n, d, _ in PEAKS])
def test_peak_table_by_exact_device_name(fake_gpu, name, dtype, tflops):
    fake_gpu(name=name)
    peak, desc = hardware.peak_flops('cuda', dtype)
    assert peak == pytest.approx(tflops * 1e12)
    assert name in desc


def test_unknown_gpu_has_no_mfu_unless_a_peak_is_given(fake_gpu):
    fake_gpu(name='NVIDIA Z9000 Prototype')
    peak, desc = hardware.peak_flops('cuda', 'bfloat16')
    assert peak is None and 'MFU n/a' in desc and 'peak_tflops' in desc
    peak, desc = hardware.peak_flops('cuda', 'bfloat16', given_tflops=400)
    assert peak == 400e12 and 'given' in desc


def test_cuda_index_sets_the_device_and_a_missing_gpu_is_one_line(fake_gpu):
    calls = fake_gpu(count=2)
    assert hardware.pick_device('cuda:1') == 'cuda:1'
    assert calls['set_device'] == [1]
    with pytest.raises(UserError, match=r"cuda:7.*2 GPUs \(cuda:0 to cuda:1\)"):
        hardware.pick_device('cuda:7')
    with pytest.raises(UserError, match='unknown device'):
        hardware.pick_device('cuda:x')


def test_torchrun_ranks_take_the_gpu_of_their_local_rank(fake_gpu):
    calls = fake_gpu(count=4)
    assert hardware.rank_device('auto', 2, 4) == ('cuda:2', None)
    device, note = hardware.rank_device('cuda:0', 3, 4)
    assert device == 'cuda:3' and 'LOCAL_RANK' in note
    assert calls['set_device'] == [2, 3]
    with pytest.raises(UserError, match='--nproc_per_node=4'):
        hardware.rank_device('cuda', 5, 8)
    assert hardware.rank_device('cpu', 1, 2) == ('cpu', None)


def test_rng_state_restores_on_a_machine_with_fewer_gpus(monkeypatch):
    # an old checkpoint from an 8-GPU machine, restored on one with a single GPU: its own state, no IndexError
    restored = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 0)
    monkeypatch.setattr(torch.cuda, 'set_rng_state', lambda s, d: restored.append((int(s[0]), d)))
    state = checkpoint.rng_state()  # CUDA not initialized here: CPU states only
    assert 'cuda_device' not in state
    old = dict(state, cuda=[torch.tensor([i], dtype=torch.uint8) for i in range(8)])
    checkpoint.set_rng_state(old)
    assert restored == [(0, 0)]
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 3)
    checkpoint.set_rng_state(dict(state, cuda=old['cuda'][:2]))  # saved with 2 GPUs, this process is on GPU 3
    assert restored == [(0, 0)]
    checkpoint.set_rng_state(dict(state, cuda_device=torch.tensor([5], dtype=torch.uint8)))
    assert restored == [(0, 0), (5, 3)]


def test_pick_threads_keeps_the_faster_and_obeys_what_the_user_set(monkeypatch):
    import time
    from core import hardware
    saved = torch.get_num_threads()
    said = []
    try:
        monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
        monkeypatch.setattr(hardware, 'available_cores', lambda: 4)
        # a step that is slow on all cores (a busy machine), then one that is slow on one
        for slow, expected in ((4, 1), (1, 4)):
            calls = []

            def step():
                calls.append(torch.get_num_threads())
                time.sleep(0.02 if torch.get_num_threads() == slow else 0.001)
            assert hardware.pick_threads(step, log=said.append) == expected == torch.get_num_threads()
            assert calls == [1, 1, 4]  # one uncounted step, then a round that decides it (20x apart)
        assert said[0].startswith('threads: 1 (') and 'at 4: the other cores are busy' in said[0]
        assert said[1].startswith('threads: 4 (') and 'the cores are free' in said[1]
        calls = []

        def close():  # 1.25x apart: not decided by one round
            calls.append(torch.get_num_threads())
            time.sleep(0.05 if torch.get_num_threads() == 1 else 0.04)
        assert hardware.pick_threads(close, log=said.append) == 4
        assert calls in ([1] + [1, 4] * 3, [1] + [1, 4] * 2, [1, 1, 4])  # alternating, up to three rounds
        never = lambda: pytest.fail('timed although the user chose')
        assert hardware.pick_threads(never, requested=3) == 3 == torch.get_num_threads()
        monkeypatch.setenv('OMP_NUM_THREADS', '2')
        torch.set_num_threads(2)
        assert hardware.pick_threads(never) == 2
        assert hardware.pick_threads(never, device='cuda:0') == 2
        monkeypatch.delenv('OMP_NUM_THREADS')
        monkeypatch.setattr(hardware, 'available_cores', lambda: 1)
        assert hardware.pick_threads(never) == 1
    finally:
        torch.set_num_threads(saved)
