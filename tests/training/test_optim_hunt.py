"""core/training/optim.py's FiniteStep on the paths tests/training/test_sync.py does not take: AdamW without its
fused kernel, which cannot read a found_inf flag, so the host decides; and FSDP, where the host decides too."""

import torch

from core.training.optim import FiniteStep


def weights_after(opt_kwargs, finite, fsdp=False):
    """A weight after one FiniteStep of AdamW (lr 0.1, gradient 1) given `finite`, and whether the optimizer saw a
    found_inf flag when it stepped."""
    w = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([w], lr=0.1, weight_decay=0.0, **opt_kwargs)
    flagged = []
    real_step = opt.step

    def step(*a, **k):
        flagged.append(hasattr(opt, 'found_inf'))
        return real_step(*a, **k)
    opt.step = step
    w.grad = torch.ones(3)
    FiniteStep(opt, torch.amp.GradScaler('cpu', enabled=False), fsdp=fsdp)(torch.tensor(finite))
    return w.detach(), flagged


def test_unfused_adamw_steps_when_finite_and_stays_put_when_not():
    # AdamW's first step moves each weight by lr x m / sqrt(v) = 0.1 x 1 / 1 against the gradient: to -0.1
    w, flagged = weights_after(dict(foreach=False), True)
    assert torch.allclose(w, torch.full((3,), -0.1)) and flagged == [False]
    w, flagged = weights_after(dict(foreach=False), False)
    assert torch.equal(w, torch.zeros(3)) and flagged == []  # the host skipped it: no step at all


def test_under_fsdp_the_host_decides_even_for_fused_adamw():
    # fused AdamW reads found_inf, but FSDP's DTensor parameters would need the flag as a DTensor: no flag is set
    w, flagged = weights_after(dict(fused=True), True, fsdp=True)
    assert torch.allclose(w, torch.full((3,), -0.1)) and flagged == [False]
    w, flagged = weights_after(dict(fused=True), False, fsdp=True)
    assert torch.equal(w, torch.zeros(3)) and flagged == []
    # without FSDP the flag goes to the device, and the step is taken to read it
    w, flagged = weights_after(dict(fused=True), False)
    assert torch.equal(w, torch.zeros(3)) and flagged == [True]
