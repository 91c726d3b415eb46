"""core/training/optim.py's muon_update with the orthogonalization taken out (the identity), so every number of a
step can be written out by hand: the momentum blend, the Nesterov look-ahead, the shape's learning-rate scale,
weight decay, a skipped step and the grad scaler's scale."""

import math

import torch

from core.training.optim import muon_update

IDENTITY = lambda stack: stack.clone()  # noqa: E731


def shapes_and_tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 3), (4, 2), (2, 4)]  # square, tall, wide
    params = [torch.randn(s, generator=g) for s in shapes]
    grads = [torch.randn(s, generator=g) for s in shapes]
    return params, grads


def test_two_steps_written_out():
    params, grads = shapes_and_tensors()
    start = [p.clone() for p in params]
    bufs = [torch.zeros_like(p) for p in params]
    lr, wd, m = 0.1, 0.5, 0.9
    muon_update(params, grads, bufs, IDENTITY, lr, wd, m, nesterov=True)
    for p0, p, g, b in zip(start, params, grads, bufs):
        rows, cols = p.shape
        scale = lr * math.sqrt(max(1.0, rows / cols))  # torch's 'original' shape scaling: tall matrices move more
        buf = 0.1 * g  # 0 + (1 - 0.9) * (g - 0)
        update = g + 0.9 * (buf - g)  # Nesterov: the gradient pulled toward the new momentum
        assert torch.allclose(b, buf, atol=1e-6)
        assert torch.allclose(p, p0 * (1 - lr * wd) - scale * update, atol=1e-6)
    # a second step with other gradients: the momentum keeps 0.9 of the old buffer
    before = [p.clone() for p in params]
    _, grads2 = shapes_and_tensors(seed=1)
    old = [b.clone() for b in bufs]
    muon_update(params, grads2, bufs, IDENTITY, lr, wd, m, nesterov=True)
    for p1, p, g, b0, b in zip(before, params, grads2, old, bufs):
        rows, cols = p.shape
        buf = 0.9 * b0 + 0.1 * g
        assert torch.allclose(b, buf, atol=1e-6)
        update = g + 0.9 * (buf - g)
        assert torch.allclose(p, p1 * (1 - lr * wd) - lr * math.sqrt(max(1.0, rows / cols)) * update, atol=1e-6)


def test_without_nesterov_the_update_is_the_momentum():
    params, grads = shapes_and_tensors()
    start = [p.clone() for p in params]
    bufs = [torch.full_like(p, 0.5) for p in params]
    muon_update(params, grads, bufs, IDENTITY, 0.2, 0.0, 0.5, nesterov=False)
    for p0, p, g in zip(start, params, grads):
        rows, cols = p.shape
        buf = 0.5 * 0.5 + 0.5 * g
        assert torch.allclose(p, p0 - 0.2 * math.sqrt(max(1.0, rows / cols)) * buf, atol=1e-6)


def test_a_skipped_step_changes_neither_weights_nor_momentum():
    params, grads = shapes_and_tensors()
    start = [p.clone() for p in params]
    bufs = [torch.full_like(p, 0.25) for p in params]
    muon_update(params, grads, bufs, IDENTITY, 0.1, 0.1, 0.9, skip=torch.tensor(True))
    for p0, p, b in zip(start, params, bufs):
        assert torch.equal(p, p0)
        assert torch.equal(b, torch.full_like(p, 0.25))


def test_grad_scale_divides_the_gradients():
    params, grads = shapes_and_tensors()
    twin = [p.clone() for p in params]
    bufs, bufs_twin = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    muon_update(params, [g * 8 for g in grads], bufs, IDENTITY, 0.1, 0.1, 0.9, grad_scale=torch.tensor(8.0))
    muon_update(twin, grads, bufs_twin, IDENTITY, 0.1, 0.1, 0.9)
    for a, b, ba, bb in zip(params, twin, bufs, bufs_twin):
        assert torch.allclose(a, b, atol=1e-6)
        assert torch.allclose(ba, bb, atol=1e-6)
