"""One process or many under torchrun: the device, the process group, the share of the batch each process takes,
the collectives train.py uses, and the teardown."""

import datetime
import os
import sys

import torch

from core import hardware
from core.errors import UserError, install_excepthook


def compute_init(device='auto', dtype='auto', compile='auto', backend='auto', fsdp=False, log=print):
    """Set up this process: (ddp, rank, local_rank, world_size, device, dtype, compile, autocast context).
    torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them this is a lone process on `device`."""
    ddp = int(os.environ.get('RANK', -1)) != -1
    if ddp:
        import torch.distributed as dist
        rank, local_rank = int(os.environ['RANK']), int(os.environ['LOCAL_RANK'])
        world_size = int(os.environ['WORLD_SIZE'])
        local_world_size = int(os.environ.get('LOCAL_WORLD_SIZE', world_size))
        device, note = hardware.rank_device(device, local_rank, local_world_size)
        if device == 'cpu':
            # processes on one machine share its cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world_size))
        # rank 0 writes the checkpoints while the others wait in their next collective: a large model on a slow
        # disk can take longer than the default 10 minutes, which would kill a healthy run
        dist.init_process_group(backend=('nccl' if device.startswith('cuda') else 'gloo') if backend == 'auto'
                                else backend, timeout=datetime.timedelta(minutes=60))
        install_excepthook()  # again, outside the one init_process_group installs, which would swallow our error line
        report_once()
        if note and rank == 0:
            log(note)
    else:
        rank, local_rank, world_size = 0, 0, 1
        device = hardware.pick_device(device)
        if fsdp:
            raise UserError("fsdp=True shards the model over several processes; launch with "
                            "torchrun --standalone --nproc_per_node=N train.py ..., or set --fsdp=False")
    device_type = device.split(':')[0]
    dtype = hardware.pick_dtype(dtype, device, training=True)
    if device_type == 'cpu':
        hardware.tune_cpu_allocator()  # glibc keeps the memory of each step for the next instead of faulting it in again
    if fsdp and dtype == 'float16':
        # the grad scaler would decide on each rank's shards alone whether to skip a step
        raise UserError("fsdp=True trains in bfloat16 or float32, not float16; use --dtype=bfloat16")
    compile = hardware.pick_compile(compile, device)
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return ddp, rank, local_rank, world_size, device, dtype, compile, hardware.autocast_context(device, dtype)


def share_batch(gradient_accumulation_steps, batch_size, world_size, log=print):
    """(micro-steps, batch_size, split) for one of world_size processes. The global batch (micro-steps x
    batch_size) stays what one process would take: the processes share the micro-steps, or, when there are
    fewer micro-steps than processes, each micro-batch (split processes take 1/split of it)."""
    if world_size == 1 or gradient_accumulation_steps % world_size == 0:
        return gradient_accumulation_steps // world_size, batch_size, 1
    if batch_size == 'auto' or batch_size % world_size == 0:
        log(f"torchrun: gradient_accumulation_steps={gradient_accumulation_steps} does not divide over "
            f"{world_size} processes, so each takes 1/{world_size} of every micro-batch and the global batch "
            f"stays what one process would take")
        return gradient_accumulation_steps, batch_size if batch_size == 'auto' else batch_size // world_size, world_size
    nearest = max(world_size, round(batch_size / world_size) * world_size)
    raise UserError(f"gradient_accumulation_steps={gradient_accumulation_steps} and batch_size={batch_size} "
                    f"cannot be shared by {world_size} processes; use --batch_size={nearest} (a multiple of "
                    f"{world_size}) or --gradient_accumulation_steps={world_size * gradient_accumulation_steps}")


def wrap_ddp(model, local_rank, device_type):
    """model under DDP. The buffers (rope tables) are the same on every rank, so no broadcast before each forward;
    gradients live in the all-reduce buckets instead of a copy beside them."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    return DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None, broadcast_buffers=False,
               gradient_as_bucket_view=True)


def all_reduce(values, device, op='sum'):
    """Floats combined over all processes ('sum', 'min' or 'max'); unchanged without a process group."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op={'sum': dist.ReduceOp.SUM, 'min': dist.ReduceOp.MIN, 'max': dist.ReduceOp.MAX}[op])
    return t.tolist()


def finish(clean):
    """Tear the process group down; on a clean exit the ranks first meet, so none leaves while another saves."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return
    if clean:
        # a rank tearing its process group down while another still saved was seen to abort at exit
        # (std::terminate in gloo's teardown, about 1 run in 15 of the DDP test)
        dist.barrier()
    dist.destroy_process_group()


def exit_process(code, ddp, before=None):
    """sys.exit(code), except for one of several processes: that one ends after Python's exit handlers and flushed
    streams without the C++ runtime's teardown, where a static object of the collective library could still hold a
    running thread and abort the process (SIGABRT after everything was saved, which torchrun reports as a failed
    run; docs/results.md has how often). `before` is called last, just before the process ends."""
    if not ddp:
        sys.exit(code)
    import atexit
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    if before:
        before()
    os._exit(code)


def all_gather_object(obj, world_size):
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    import torch.distributed as dist
    gathered = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def report_once():
    """Under torchrun, a user mistake is said once: by the first rank that finds it (every rank finds a mistake in
    the config at once; one rank alone finds a missing shard of its own). The other ranks leave quietly with the
    same exit code, also those whose collective broke because a peer left that way, but not before the line is
    out: torchrun stops every rank once one has left. The ranks count the reports in the store torchrun's agent
    keeps; without it, rank 0 speaks for all. A no-op outside torchrun; call it after any other excepthook is
    installed."""
    if 'RANK' not in os.environ:
        return
    from core.errors import EXIT_CODE, one_line
    previous = sys.excepthook

    def hook(kind, value, tb):
        if isinstance(value, UserError):
            # every rank that found it tells torchrun, whose summary quotes the earliest failure it sees
            tell_torchrun(f"error: {one_line(value)}")
            reports = Reports()
            if reports.add(1) == 1:
                try:
                    previous(kind, value, tb)  # prints the line and raises SystemExit
                except SystemExit:
                    pass
                # gone the moment the others are told: torchrun would stop a rank still tearing down (exit code -15)
                exit_process(EXIT_CODE, True, before=reports.said)
            reports.wait_said()
            sys.exit(EXIT_CODE)
        if not isinstance(value, (SystemExit, KeyboardInterrupt)):
            reports = Reports()
            if reports.add(0):
                reports.wait_said()
                sys.exit(EXIT_CODE)  # a collective broke because a peer left on a mistake it reported
        previous(kind, value, tb)
    sys.excepthook = hook


class Reports:
    """This torchrun job's count of reported mistakes, and whether the one that says it has, in the store of
    torchrun's agent. Without the store (no agent, or it cannot be reached), as if rank 0 alone reported."""

    def __init__(self):
        import torch.distributed as dist
        self.store = None
        self.key = f"train.py/mistakes/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/" \
                   f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        if (dist.is_available() and os.environ.get('TORCHELASTIC_USE_AGENT_STORE') == 'True' and
                os.environ.get('MASTER_ADDR') and os.environ.get('MASTER_PORT')):
            try:
                self.store = dist.TCPStore(os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']),
                                           is_master=False, timeout=datetime.timedelta(seconds=5))
            except Exception:
                pass

    def add(self, n):
        """Add n to the count and return it: without the store, 1 on rank 0 and 2 elsewhere (0 if n is 0)."""
        if self.store is not None:
            try:
                return self.store.add(self.key, n)
            except Exception:
                self.store = None
        return (1 if int(os.environ.get('RANK', 0)) == 0 else 2) if n else 0

    def said(self):
        if self.store is not None:
            try:
                self.store.set(self.key + '/said', '1')
            except Exception:
                pass

    def wait_said(self, seconds=30):
        """Until the rank that says the mistake has (a slow one takes milliseconds; a dead one, the whole wait)."""
        if self.store is not None:
            try:
                self.store.wait([self.key + '/said'], datetime.timedelta(seconds=seconds))
            except Exception:
                pass


def tell_torchrun(line):
    """Put our line where torchrun's failure summary reads the root cause (its error file), in place of "<N/A>"
    and a link about tracebacks."""
    path = os.environ.get('TORCHELASTIC_ERROR_FILE')
    if path:
        import json
        import time
        try:
            with open(path, 'w') as f:
                json.dump({'message': {'message': line, 'extraInfo': {'py_callstack': line,
                                                                     'timestamp': str(int(time.time()))}}}, f)
        except OSError:
            pass
