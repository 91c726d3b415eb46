"""Optimizers beside AdamW: Muon for the hidden matrices and a list of optimizers stepped as one.
GPT.configure_optimizers in model.py decides which parameters go where."""

import functools

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
    """The quintic Newton-Schulz orthogonalization of one matrix (m, n), or of a stack of same-shaped matrices
    (k, m, n) each on its own, with one (a, b, c) per step, in dtype: bf16 as torch and Keller Jordan's Muon run
    it, or fp32 on CPUs that emulate bf16 (about a third of fp32's speed there)."""
    x = grad.to(dtype)
    single = x.dim() == 2
    if single:
        x = x.unsqueeze(0)
    tall = x.size(1) > x.size(2)
    if tall:
        x = x.mT
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) * safety).clamp(min=eps)
    for a, b, c in schedule:
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    if tall:
        x = x.mT
    return (x[0] if single else x).to(grad.dtype)


# Muon orthogonalizes same-shaped matrices as one stack (one batched matmul per Newton-Schulz product instead of
# one per matrix: at small widths the calls, not the arithmetic, set the time: 11.1 -> 6.4 ms for the 12 matrices
# of a 3 x 128 model on 2 cores), in stacks of at most this many elements, so its temporaries stay bounded
# (a matrix bigger than this goes alone, as a GPT-2-sized one does). core/training/planner.py counts the largest stack.
STACK_NUMEL = 2 ** 20


def stack_chunks(shapes, limit=STACK_NUMEL):
    """Which matrices Muon orthogonalizes together: lists of indices into shapes, each list matrices of one shape
    up to a transpose (a (m, n) and an (n, m) stack as the same short-side-first shape), in order, and at most
    `limit` elements in all unless one matrix alone is bigger."""
    chunks, open_chunk = [], {}
    for i, shape in enumerate(shapes):
        key = (min(shape), max(shape))
        numel = key[0] * key[1]
        chunk = open_chunk.get(key)
        if chunk is None or (len(chunk) + 1) * numel > limit:
            chunk = open_chunk[key] = []
            chunks.append(chunk)
        chunk.append(i)
    return chunks


def orthogonalize(updates, ns, eps, coefficients, steps):
    """Muon's orthogonalization of a stack (k, m, n) of same-shaped matrices, each on its own: Polar Express (in bf16
    wherever bf16 is native), or torch's quintic `coefficients` repeated `steps` times."""
    if ns == 'polar_express':
        dtype = torch.bfloat16 if updates.device.type != 'cpu' or cpu_native_bf16() else torch.float32
        return newton_schulz(updates, POLAR_EXPRESS, eps, dtype, safety=1.02)
    if updates.device.type == 'cpu' or _torch_muon is None:  # torch's quintic, the same steps, in float32
        return newton_schulz(updates, [coefficients] * steps, eps, torch.float32)
    # torch's own iteration takes one matrix at a time
    return torch.stack([_torch_muon._zeropower_via_newtonschulz(u, coefficients, steps, eps) for u in updates])


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

    def orthogonalize(self, updates, group):
        """The orthogonalized updates of a stack (k, m, n) of same-shaped matrices, each on its own."""
        return orthogonalize(updates, self.ns, group['eps'], group['ns_coefficients'], group['ns_steps'])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale, found_inf = getattr(self, 'grad_scale', None), getattr(self, 'found_inf', None)
        for group in self.param_groups:
            params, grads, bufs = [], [], []
            self._init_group(group, params, grads, bufs)  # torch's own gathering, momentum buffers created
            # where the step is skipped, the old values stay: one flag for the group, on its device
            skip = found_inf.to(params[0].device) > 0 if found_inf is not None and params else None
            muon_update(params, grads, bufs, lambda stack: self.orthogonalize(stack, group), group['lr'],
                        group['weight_decay'], group['momentum'], group['nesterov'], group['adjust_lr_fn'],
                        grad_scale, skip)
        return loss


def muon_update(params, grads, bufs, orthogonalize, lr, weight_decay, momentum, nesterov=True, adjust_lr_fn=None,
                grad_scale=None, skip=None):
    """Muon's step over matrices, their gradients and momentum buffers, in place: the momentum-blended updates of
    same-shaped matrices go through orthogonalize(stack (k, m, n)) as one stack, short side first, and each matrix
    moves by its orthogonalized update at the learning rate torch scales by its shape, after weight decay. grad_scale
    divides the gradients; where skip (a device flag) is set, neither weights nor momentum change."""
    for chunk in stack_chunks([p.shape for p in params]):
        short, long = sorted(params[chunk[0]].shape)
        stack = torch.empty((len(chunk), short, long), dtype=grads[chunk[0]].dtype, device=params[chunk[0]].device)
        new_bufs = []
        for i, row in zip(chunk, stack):
            grad = grads[i] if grad_scale is None else grads[i] / grad_scale
            new_buf = bufs[i].lerp(grad, 1 - momentum)
            row = row.mT if grad.size(0) > grad.size(1) else row
            if nesterov:
                torch.lerp(grad, new_buf, momentum, out=row)
            else:
                row.copy_(new_buf)
            new_bufs.append(new_buf)
        updates = orthogonalize(stack)
        del stack
        for i, new_buf, update in zip(chunk, new_bufs, updates.unbind(0)):
            p, buf = params[i], bufs[i]
            update = update.mT if p.size(0) > p.size(1) else update
            new_p = p.mul(1 - lr * weight_decay).add_(update, alpha=-_adjust_lr(lr, adjust_lr_fn, p.shape))
            if skip is not None:
                new_buf, new_p = torch.where(skip, buf, new_buf), torch.where(skip, p, new_p)
            buf.copy_(new_buf)
            p.copy_(new_p)


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


class BareMuonAdamW:
    """Muon on the blocks' matrices and fused AdamW on the rest, as model.configure_optimizers builds them for a
    fresh run, stepped with the same kernels to the same weights (tests/test_plan.py) but without
    torch.optim: a torch optimizer's first use imports torch's compiler (torch.optim's _disable_dynamo), about 1 s
    that plan.py's measuring would take out of a user's budget. For timing steps: no state dict, schedule or
    skipped steps, and only where configure_optimizers fuses AdamW (CPU and CUDA)."""

    def __init__(self, model, weight_decay, learning_rate, betas, muon_lr, muon_momentum, muon_ns):
        matrices, embed_head, vectors = model.param_groups()
        self.matrices, self.bufs = matrices, [torch.zeros_like(p) for p in matrices]
        self.muon = dict(lr=muon_lr, weight_decay=weight_decay, momentum=muon_momentum)
        # torch.optim.Muon's defaults, as configure_optimizers leaves them
        self.orthogonalize = functools.partial(
            orthogonalize, ns=muon_ns, eps=_torch_muon.EPS, steps=_torch_muon.DEFAULT_NS_STEPS,
            coefficients=(_torch_muon.DEFAULT_A, _torch_muon.DEFAULT_B, _torch_muon.DEFAULT_C))
        self.adam = [dict(params=ps, weight_decay=wd, exp_avgs=[torch.zeros_like(p) for p in ps],
                          exp_avg_sqs=[torch.zeros_like(p) for p in ps],
                          steps=[torch.zeros((), device=p.device) for p in ps])
                     for ps, wd in ((embed_head, weight_decay), (vectors, 0.0))]
        self.lr, self.betas = learning_rate, betas

    @torch.no_grad()
    def step(self):
        m = self.muon
        with_grad = [i for i, p in enumerate(self.matrices) if p.grad is not None]
        muon_update([self.matrices[i] for i in with_grad], [self.matrices[i].grad for i in with_grad],
                    [self.bufs[i] for i in with_grad], self.orthogonalize, m['lr'], m['weight_decay'], m['momentum'])
        for g in self.adam:
            idx = [i for i, p in enumerate(g['params']) if p.grad is not None]
            if not idx:
                continue
            steps = [g['steps'][i] for i in idx]
            torch._foreach_add_(steps, 1)
            torch._fused_adamw_([g['params'][i] for i in idx], [g['params'][i].grad for i in idx],
                                [g['exp_avgs'][i] for i in idx], [g['exp_avg_sqs'][i] for i in idx], [], steps,
                                lr=self.lr, beta1=self.betas[0], beta2=self.betas[1], weight_decay=g['weight_decay'],
                                eps=1e-8, amsgrad=False, maximize=False)

    def zero_grad(self, set_to_none=True):
        for p in self.matrices + [p for g in self.adam for p in g['params']]:
            p.grad = None


class FiniteStep:
    """The optimizer step of a training step whose loss and gradient norm were all finite, skipped otherwise.
    With fp16 the grad scaler decides. Else, where every optimizer reads a `found_inf` flag (Muon, fused AdamW),
    the flag decides on the device, so the host never waits for it; the host decides where one does not (AdamW
    without its fused kernel), and under FSDP, whose DTensor parameters would need the flag as a DTensor too."""

    def __init__(self, opt, scaler, fsdp=False):
        self.opt, self.scaler = opt, scaler
        self.on_device = not fsdp and all(isinstance(o, Muon) or o.defaults.get('fused')
                                          for o in getattr(opt, 'optimizers', [opt]))

    def __call__(self, finite):
        if self.scaler.is_enabled():
            self.scaler.step(self.opt)
            self.scaler.update()
        elif self.on_device:
            self.opt.found_inf = (~finite).float()
            self.opt.step()
            del self.opt.found_inf
        elif finite.item():
            self.opt.step()
