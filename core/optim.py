"""Optimizers beside AdamW: Muon for the hidden matrices and a list of optimizers stepped as one.
GPT.configure_optimizers in model.py decides which parameters go where."""

import torch

from core.hardware import cpu_native_bf16

try:
    import torch.optim._muon as _torch_muon  # where torch keeps Muon's Newton-Schulz iteration
except ImportError:
    _torch_muon = None

# Polar Express (Amsel, Persson, Musco and Gower 2025, arXiv:2505.16932): a different quintic for each of five
# steps, chosen to bring every singular value close to 1 sooner than repeating one polynomial does; the input is
# scaled 2% below unit norm for safety. The figures are the published ones (modded-nanogpt uses the same).
POLAR_EXPRESS = ((8.156554524902461, -22.48329292557795, 15.878769915207462),
                 (4.042929935166739, -2.808917465908714, 0.5000178451051316),
                 (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
                 (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
                 (2.3465413258596377, -1.7097828382687081, 0.42323551169305323))
MUON_NS = ('quintic', 'polar_express')


def newton_schulz(grad, schedule, eps, dtype, safety=1.0):
    """The quintic Newton-Schulz orthogonalization of one matrix, with one (a, b, c) per step, in dtype: bf16 as
    torch and Keller Jordan's Muon run it, or fp32 on CPUs that emulate bf16 (about a third of fp32's speed there)."""
    x = grad.to(dtype)
    tall = grad.size(0) > grad.size(1)
    if tall:
        x = x.T
    x = x / (x.norm() * safety).clamp(min=eps)
    for a, b, c in schedule:
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return (x.T if tall else x).to(grad.dtype)


def newton_schulz_float32(grad, ns_coefficients, ns_steps, eps):
    """torch's quintic Newton-Schulz orthogonalization, the same steps, in float32 instead of bfloat16."""
    return newton_schulz(grad, [ns_coefficients] * ns_steps, eps, torch.float32)


class Muon(torch.optim.Muon):
    """torch.optim.Muon (same update, state and checkpoints) with three changes. ns='polar_express' takes the
    Polar Express schedule above instead of torch's repeated quintic (in bf16 wherever bf16 is native). On the
    CPU torch's quintic Newton-Schulz
    iteration runs in float32: torch runs it in bfloat16, fast on GPUs but emulated on most CPUs at about a
    third of the float32 speed, which made the step cost as much as the forward and backward of a small model.
    And it honours `found_inf` as fused AdamW does for the grad scaler: a device flag, 1 when the step must
    change nothing (neither weights nor momentum), so a non-finite step is skipped without the host reading it."""

    _step_supports_amp_scaling = True  # grad_scale and found_inf are read below, as fused AdamW reads them

    def __init__(self, params, ns='quintic', **kw):
        if ns not in MUON_NS:
            raise ValueError(f"muon_ns={ns!r} is not one of {', '.join(MUON_NS)}")
        super().__init__(params, **kw)
        self.ns = ns

    def orthogonalize(self, update, group):
        if self.ns == 'polar_express':
            dtype = torch.bfloat16 if update.device.type != 'cpu' or cpu_native_bf16() else torch.float32
            return newton_schulz(update, POLAR_EXPRESS, group['eps'], dtype, safety=1.02)
        if update.device.type == 'cpu' or _torch_muon is None:
            return newton_schulz_float32(update, group['ns_coefficients'], group['ns_steps'], group['eps'])
        return _torch_muon._zeropower_via_newtonschulz(update, group['ns_coefficients'], group['ns_steps'], group['eps'])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale, found_inf = getattr(self, 'grad_scale', None), getattr(self, 'found_inf', None)
        for group in self.param_groups:
            lr, wd, momentum = group['lr'], group['weight_decay'], group['momentum']
            params, grads, bufs = [], [], []
            self._init_group(group, params, grads, bufs)  # torch's own gathering, momentum buffers created
            for p, grad, buf in zip(params, grads, bufs):  # one matrix at a time, so one set of temporaries
                if grad_scale is not None:
                    grad = grad / grad_scale
                new_buf = buf.lerp(grad, 1 - momentum)
                update = grad.lerp(new_buf, momentum) if group['nesterov'] else new_buf
                update = self.orthogonalize(update, group)
                scaled_lr = _adjust_lr(lr, group['adjust_lr_fn'], p.shape)
                new_p = p.mul(1 - lr * wd).add_(update, alpha=-scaled_lr)
                if found_inf is not None:  # keep the old values where the step is skipped
                    skip = found_inf.to(p.device) > 0
                    new_buf, new_p = torch.where(skip, buf, new_buf), torch.where(skip, p, new_p)
                buf.copy_(new_buf)
                p.copy_(new_p)
        return loss


def _adjust_lr(lr, adjust_lr_fn, shape):
    # torch.optim.Muon's learning-rate scaling by the matrix's shape
    if _torch_muon is not None and hasattr(_torch_muon, '_adjust_lr'):
        return _torch_muon._adjust_lr(lr, adjust_lr_fn, shape)
    return lr * max(1.0, shape[0] / shape[1]) ** 0.5


class OptimizerList:
    """Several optimizers stepped as one (Muon for matrices plus AdamW for the rest)."""

    def __init__(self, optimizers):
        self.optimizers = optimizers

    @property
    def param_groups(self):
        return [g for opt in self.optimizers for g in opt.param_groups]

    @property
    def _step_supports_amp_scaling(self):
        return all(getattr(opt, '_step_supports_amp_scaling', False) for opt in self.optimizers)

    def step(self):
        # the grad scaler's (or train.py's) grad_scale and found_inf, set on this list, reach every optimizer
        flags = {k: getattr(self, k) for k in ('grad_scale', 'found_inf') if hasattr(self, k)}
        for opt in self.optimizers:
            for k, v in flags.items():
                setattr(opt, k, v)
            try:
                opt.step()
            finally:
                for k in flags:
                    delattr(opt, k)

    def zero_grad(self, set_to_none=True):
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {'optimizers': [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state):
        for opt, s in zip(self.optimizers, state['optimizers']):
            opt.load_state_dict(s)
