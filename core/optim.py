"""Optimizers beside AdamW: Muon for the hidden matrices (float32 Newton-Schulz on CPU) and a list of
optimizers stepped as one. GPT.configure_optimizers in model.py decides which parameters go where."""

import torch

try:
    import torch.optim._muon as _torch_muon  # where torch keeps Muon's Newton-Schulz iteration
except ImportError:
    _torch_muon = None


def newton_schulz_float32(grad, ns_coefficients, ns_steps, eps):
    """torch's quintic Newton-Schulz orthogonalization, the same steps, in float32 instead of bfloat16."""
    a, b, c = ns_coefficients
    x = grad.float()
    tall = grad.size(0) > grad.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return (x.T if tall else x).to(grad.dtype)


class Muon(torch.optim.Muon):
    """torch.optim.Muon, with its Newton-Schulz iteration in float32 when the parameters are on the CPU.
    Torch runs the iteration in bfloat16, fast on GPUs but emulated on most CPUs at about a third of
    the float32 speed; on small models that made the optimizer step cost as much as the forward and backward."""

    def step(self, closure=None):
        on_cpu = all(p.device.type == 'cpu' for g in self.param_groups for p in g['params'])
        if not on_cpu or _torch_muon is None or not hasattr(_torch_muon, '_zeropower_via_newtonschulz'):
            return super().step(closure)
        saved = _torch_muon._zeropower_via_newtonschulz
        _torch_muon._zeropower_via_newtonschulz = newton_schulz_float32
        try:
            return super().step(closure)
        finally:
            _torch_muon._zeropower_via_newtonschulz = saved


class OptimizerList:
    """Several optimizers stepped as one (Muon for matrices plus AdamW for the rest)."""

    def __init__(self, optimizers):
        self.optimizers = optimizers

    @property
    def param_groups(self):
        return [g for opt in self.optimizers for g in opt.param_groups]

    def step(self):
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none=True):
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {'optimizers': [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state):
        for opt, s in zip(self.optimizers, state['optimizers']):
            opt.load_state_dict(s)
