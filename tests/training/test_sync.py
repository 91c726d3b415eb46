"""No host sync in the training step: between log lines train.py reads nothing back from the device,
and a non-finite step is skipped by the optimizers themselves (found_inf) instead of by the host."""

import copy
import threading

import pytest
import torch

from core.training.optim import Muon, OptimizerList
from model import GPT
from conftest import run_inprocess

# every way a tensor's value reaches Python; on a GPU each one waits for the device
READS = ('item', 'tolist', '__bool__', '__float__', '__int__', '__index__', 'numpy', 'cpu')
ARGS = ['--n_layer=1', '--n_head=2', '--n_embd=16', '--block_size=16', '--batch_size=2', '--eval_iters=1',
        '--device=cpu', '--compile=False', '--dropout=0', '--warmup_iters=2', '--lr_decay_iters=12']


@pytest.mark.parametrize('extra', [['--gradient_accumulation_steps=1'],
                                   ['--optimizer=muon', '--gradient_accumulation_steps=2']],
                         ids=['adamw', 'muon-accumulating'])
def test_no_device_reads_between_log_lines(char_data, tmp_path, monkeypatch, extra):
    events = []
    main = threading.main_thread()  # the prefetch thread reads host index tensors only
    for name in READS:
        def counted(self, *args, _orig=getattr(torch.Tensor, name), _name=name, **kwargs):
            if threading.current_thread() is main:
                events.append(_name)
            return _orig(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    forward = GPT.forward

    def marked(self, *args, **kwargs):
        if self.training:
            events.append('forward')
        return forward(self, *args, **kwargs)
    monkeypatch.setattr(GPT, 'forward', marked)
    code, out, err = run_inprocess('train.py', f'--dataset={char_data}', f'--out_dir={tmp_path}', *ARGS, *extra,
                                   '--max_iters=12', '--log_interval=4', '--eval_interval=100')
    assert code == 0, err
    micro = 2 if 'muon' in extra[0] else 1
    starts = [i for i, e in enumerate(events) if e == 'forward'][::micro]
    assert len(starts) == 12
    windows = [events[a:b] for a, b in zip(starts, starts[1:] + [len(events)])]
    # window i is step i and what follows it: the log line after steps 4, 8 and 12, the final eval after 12
    for i, window in enumerate(windows[:-1]):
        reads = [e for e in window if e != 'forward']
        if (i + 1) % 4 == 0:
            assert reads == ['tolist'], (i, reads)  # the one read per log line: loss, norm and skip counts
        else:
            assert reads == [], (i, reads)
    assert 'iter 4: loss' in out and 'iter 8: loss' in out and 'iter 5: loss' not in out


def _nan_grads(params):
    for p in params:
        p.grad = torch.full_like(p, float('nan'))


def test_found_inf_skips_fused_adamw_and_muon_on_the_device():
    torch.manual_seed(0)
    mats = [torch.nn.Parameter(torch.randn(8, 4)), torch.nn.Parameter(torch.randn(4, 8))]
    vec = torch.nn.Parameter(torch.randn(8))
    opt = OptimizerList([Muon(mats, lr=0.02, weight_decay=0.1),
                         torch.optim.AdamW([vec], lr=0.1, fused=True)])
    for p in mats + [vec]:
        p.grad = torch.randn_like(p)
    opt.step()  # momentum and moments exist now
    before = [p.detach().clone() for p in mats + [vec]]
    state = [{k: v.clone() for k, v in opt.optimizers[0].state[p].items()} for p in mats]
    adam_state = {k: v.clone() for k, v in opt.optimizers[1].state[vec].items()}
    _nan_grads(mats + [vec])
    opt.found_inf = torch.tensor(1.0)
    opt.step()
    del opt.found_inf
    for p, b in zip(mats + [vec], before):
        assert torch.equal(p.detach(), b)
    for p, s in zip(mats, state):
        assert torch.equal(opt.optimizers[0].state[p]['momentum_buffer'], s['momentum_buffer'])
    for k, v in adam_state.items():
        assert torch.equal(opt.optimizers[1].state[vec][k], v), k
    assert not any(hasattr(o, 'found_inf') for o in opt.optimizers)
    # found_inf 0 is an ordinary step: the same as one without the flag, bit for bit
    twin = Muon([torch.nn.Parameter(p.detach().clone()) for p in mats], lr=0.02, weight_decay=0.1)
    twin.load_state_dict(copy.deepcopy(opt.optimizers[0].state_dict()))  # a load keeps the very tensors
    grads = [torch.randn_like(p) for p in mats]
    for p, q, g in zip(mats, twin.param_groups[0]['params'], grads):
        p.grad, q.grad = g.clone(), g.clone()
    opt.optimizers[0].found_inf = torch.tensor(0.0)
    opt.optimizers[0].step()
    twin.step()
    for p, q, b in zip(mats, twin.param_groups[0]['params'], before):
        assert torch.equal(p.detach(), q.detach()) and not torch.equal(p.detach(), b)


def test_the_grad_scaler_steps_the_optimizer_list_without_reading_found_inf(monkeypatch):
    mats = [torch.nn.Parameter(torch.randn(8, 4))]
    vec = torch.nn.Parameter(torch.randn(8))
    opt = OptimizerList([Muon(mats, lr=0.02), torch.optim.AdamW([vec], lr=0.1, fused=True)])
    scaler = torch.amp.GradScaler('cpu', init_scale=4.0)
    (scaler.scale((mats[0].sum() + vec.sum()) * float('inf'))).backward()
    before = [p.detach().clone() for p in mats + [vec]]
    reads = []
    item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, 'item', lambda self: reads.append(1) or item(self))
    scaler.step(opt)
    monkeypatch.undo()
    scaler.update()
    assert reads == []  # GradScaler reads found_inf on the host only for optimizers that cannot take it
    for p, b in zip(mats + [vec], before):
        assert torch.equal(p.detach(), b)
    assert scaler.get_scale() == 2.0
