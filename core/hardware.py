"""Device, dtype and autocast choices, and the peak FLOP/s that MFU is measured against."""

import functools
import os
import re
import sys
import time
from contextlib import nullcontext

import torch

from core.errors import UserError

# dense (no sparsity) tensor-core peaks in TFLOP/s from the vendors' data sheets, by the words of the name
# torch.cuda.get_device_name reports: the entry whose words all appear in the name, the most words winning
# ('H200 NVL' over 'H200'). bf16/fp16 is the 16-bit tensor-core figure, tf32 what fp32 training gets with
# allow_tf32 (None: no TF32, so fp32 runs on the plain cores at the fp32 figure). An SXM part reports no
# form factor ('NVIDIA H100 80GB HBM3'), so the bare name is the SXM figure.
GPU_PEAKS = {
    'B300': dict(bf16=2250, fp16=2250, tf32=1125, fp32=75),
    'GB200': dict(bf16=2500, fp16=2500, tf32=1250, fp32=80),
    'B200': dict(bf16=2250, fp16=2250, tf32=1100, fp32=75),
    'H200': dict(bf16=989, fp16=989, tf32=494, fp32=67),
    'H200 NVL': dict(bf16=835, fp16=835, tf32=418, fp32=60),
    'GH200': dict(bf16=989, fp16=989, tf32=494, fp32=67),
    'H100': dict(bf16=989, fp16=989, tf32=494, fp32=67),
    'H100 NVL': dict(bf16=835, fp16=835, tf32=418, fp32=60),
    'H100 PCIe': dict(bf16=756, fp16=756, tf32=378, fp32=51),
    'H800': dict(bf16=989, fp16=989, tf32=494, fp32=67),
    'H800 PCIe': dict(bf16=756, fp16=756, tf32=378, fp32=51),
    'H20': dict(bf16=148, fp16=148, tf32=74, fp32=44),
    'A100': dict(bf16=312, fp16=312, tf32=156, fp32=19.5),
    'A800': dict(bf16=312, fp16=312, tf32=156, fp32=19.5),
    'A40': dict(bf16=149.7, fp16=149.7, tf32=74.8, fp32=37.4),
    'A30': dict(bf16=165, fp16=165, tf32=82, fp32=10.3),
    'A10': dict(bf16=125, fp16=125, tf32=62.5, fp32=31.2),
    'A10G': dict(bf16=70, fp16=70, tf32=35, fp32=31.2),
    'A6000': dict(bf16=154.8, fp16=154.8, tf32=77.4, fp32=38.7),
    'L40S': dict(bf16=362, fp16=362, tf32=183, fp32=91.6),
    'L40': dict(bf16=181, fp16=181, tf32=90.5, fp32=90.5),
    'L4': dict(bf16=121, fp16=121, tf32=60, fp32=30.3),
    'RTX 4090': dict(bf16=165, fp16=165, tf32=82.6, fp32=82.6),
    'RTX 3090': dict(bf16=71, fp16=71, tf32=35.6, fp32=35.6),
    # Volta and Turing: fp16 tensor cores only; bf16 is emulated on the plain cores and there is no TF32
    'V100': dict(bf16=None, fp16=125, tf32=None, fp32=15.7),
    'V100 PCIE': dict(bf16=None, fp16=112, tf32=None, fp32=14),
    'V100S': dict(bf16=None, fp16=130, tf32=None, fp32=16.4),
    'T4': dict(bf16=None, fp16=65, tf32=None, fp32=8.1),
    'MI300X': dict(bf16=1307.4, fp16=1307.4, tf32=653.7, fp32=163.4),
    'MI325X': dict(bf16=1307.4, fp16=1307.4, tf32=653.7, fp32=163.4),
    'MI250X': dict(bf16=383, fp16=383, tf32=None, fp32=95.7),
}

_cpu_peak_cache = {}


def _words(name):
    return set(re.split(r'[^A-Z0-9]+', name.upper())) - {''}


def gpu_peak_entry(name):
    """(table key, figures) of the GPU named name, or (None, None) when the table does not know it."""
    words = _words(name)
    known = [(len(_words(k)), k) for k in GPU_PEAKS if _words(k) <= words]
    if not known:
        return None, None
    key = max(known)[1]
    return key, GPU_PEAKS[key]


def cuda_capability(device):
    """(major, minor) compute capability of a CUDA device; None off CUDA."""
    if device.split(':')[0] != 'cuda':
        return None
    return tuple(torch.cuda.get_device_capability(device))


def native_bf16(device):
    """True when the GPU has bf16 in hardware: compute capability 8.0 (Ampere) or later. torch's
    is_bf16_supported also counts emulation, which V100 and T4 run far slower than fp16."""
    if torch.version.hip:  # ROCm reports its own capabilities; MI200 and later have bf16
        return torch.cuda.is_bf16_supported()
    return cuda_capability(device) >= (8, 0)


def pick_device(device='auto'):
    """The device to run on. cuda:N also becomes the current CUDA device, so synchronize, memory statistics
    and the kernels torch launches without an explicit device all act on GPU N, not GPU 0."""
    if device == 'auto':
        if torch.cuda.is_available():
            return 'cuda'
        if getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available():
            return 'mps'
        return 'cpu'
    kind, _, index = device.partition(':')
    if kind not in ('cpu', 'cuda', 'mps') or (index and not (kind == 'cuda' and index.isdigit())):
        raise UserError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps")
    if kind == 'cuda' and not torch.cuda.is_available():
        raise UserError(f"device='{device}' but CUDA is not available here; use --device=cpu or --device=auto")
    if kind == 'mps' and not (getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available()):
        raise UserError(f"device='{device}' but MPS is not available here; use --device=cpu or --device=auto")
    if kind == 'cuda' and index:
        count = torch.cuda.device_count()
        if int(index) >= count:
            raise UserError(f"device='{device}' but this machine shows {count} GPU{'s' if count != 1 else ''} "
                            f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''}); check CUDA_VISIBLE_DEVICES or "
                            f"pick another --device")
        torch.cuda.set_device(int(index))
    return device


def rank_device(device, local_rank, local_world_size):
    """The device of one torchrun process: on CUDA the GPU numbered by its LOCAL_RANK, whatever --device
    named, so the ranks never share a GPU. Returns (device, a note for the log or None)."""
    kind = device.split(':')[0]
    if not (device == 'auto' or kind == 'cuda') or not torch.cuda.is_available():
        return pick_device(device), None
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise UserError(f"torchrun started {local_world_size} processes on this node but it shows {count} "
                        f"GPU{'s' if count != 1 else ''}; use --nproc_per_node={count} or fewer")
    note = None
    if ':' in device and device != f'cuda:{local_rank}':
        note = (f"device={device} ignored under torchrun: each process takes the GPU of its LOCAL_RANK "
                f"(cuda:0 to cuda:{local_world_size - 1}); choose GPUs with CUDA_VISIBLE_DEVICES")
    return pick_device(f'cuda:{local_rank}'), note


@functools.cache
def cpu_native_bf16():
    """True when the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX: Intel Cooper Lake and Sapphire
    Rapids on, AMD Zen 4 on), where torch's bf16 GEMMs run about twice its fp32 ones (2.2x measured on a
    Zen 4 core). Read from /proc/cpuinfo; elsewhere (macOS, Windows) False, so those CPUs stay in fp32."""
    try:
        with open('/proc/cpuinfo') as f:
            flags = next((line.split(':', 1)[1].split() for line in f if line.startswith('flags')), [])
    except OSError:
        flags = []
    return 'avx512_bf16' in flags or 'amx_bf16' in flags


def tune_cpu_allocator():
    """glibc's malloc hands freed memory back to the system and maps each large block afresh, so a training step
    on a CPU, which frees and allocates the same activations every step, spends its time in page faults. Keep the
    memory instead: no trimming, the heap grown 512 MiB at a time, every block from the heap (no separate
    mappings). 3-12% off a CPU speedrun step in A/B runs here; the process keeps its peak memory until it exits.
    Linux with glibc only (mallopt); elsewhere nothing changes. Returns whether it was applied."""
    if not sys.platform.startswith('linux'):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries without mallopt
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
    return all(mallopt(k, v) == 1 for k, v in ((M_TRIM_THRESHOLD, 2 ** 31 - 1), (M_TOP_PAD, 512 * 2 ** 20),
                                                 (M_MMAP_MAX, 0)))


def pick_dtype(dtype, device, training=False):
    """bf16 where the device has it in hardware, fp16 on older CUDA (with a grad scaler), fp32 on CPU.
    For training, a CPU with bf16 in hardware trains under bf16 autocast too: the same loss as fp32 on
    nanoGPT's CPU recipe (val 1.8985 vs 1.8983 after 2000 steps) at 1.5x the speed. Inference on CPU
    (sample, eval, serve) stays in fp32: its small decode matmuls gain little, and logits stay exact."""
    kind = device.split(':')[0]
    if dtype == 'auto':
        if kind == 'cuda':
            return 'bfloat16' if native_bf16(device) else 'float16'
        return 'bfloat16' if training and kind == 'cpu' and cpu_native_bf16() else 'float32'
    if dtype not in ('float32', 'bfloat16', 'float16'):
        raise UserError(f"unknown dtype '{dtype}'; use auto, float32, bfloat16 or float16")
    if kind == 'cpu' and dtype == 'float16':
        raise UserError(f"float16 autocast is not supported {'for training ' if training else ''}on a CPU; use "
                        f"--dtype=bfloat16 or float32")
    return dtype


def has_triton():
    """torch.compile's GPU kernels are Triton's; Windows and macOS wheels come without it."""
    import importlib.util
    return importlib.util.find_spec('triton') is not None


def cpp_compiler():
    """The C++ compiler inductor's CPU backend would call, or None: $CXX, else g++, c++, clang++ (cl on Windows)."""
    import shutil
    names = [os.environ['CXX']] if os.environ.get('CXX') else ['g++', 'c++', 'clang++', 'cl']
    return next(filter(None, map(shutil.which, names)), None)


def pick_compile(compile, device):
    """compile='auto': on for CUDA GPUs that inductor's Triton kernels support (compute capability 7.0
    and later, Triton installed), off elsewhere (CPU, MPS, Windows without Triton). compile=True on an
    older GPU stops with one line instead of failing at the first step."""
    kind = device.split(':')[0]
    if compile is True and kind == 'cpu' and not cpp_compiler():
        raise UserError("torch.compile on a CPU builds C++ kernels and found no C++ compiler (g++, clang++ or $CXX); "
                        "install one (Debian/Ubuntu: apt install g++) or use --compile=False")
    if compile == 'auto' and kind == 'cuda' and not has_triton():
        return False
    if kind != 'cuda' or torch.version.hip:
        return kind == 'cuda' if compile == 'auto' else compile
    cap = cuda_capability(device)
    if compile == 'auto':
        return cap >= (7, 0)
    if compile and cap < (7, 0):
        raise UserError(f"compile=True needs a GPU of compute capability 7.0 or later for torch.compile's kernels; "
                        f"{torch.cuda.get_device_name(device)} is {cap[0]}.{cap[1]}: use --compile=False")
    return compile


def check_compile_mode(mode):
    """A torch.compile mode other than 'default' must be one inductor knows, said in one line before any compiling."""
    if mode != 'default':
        from torch._inductor import list_mode_options
        try:
            list_mode_options(mode)
        except RuntimeError:
            raise UserError(f"unknown compile_mode '{mode}'; use one of {', '.join(sorted(list_mode_options()))}")


def fused_attention(device, dtype):
    """True when scaled_dot_product_attention runs a fused kernel (flash or memory-efficient) that keeps only
    q, k, v, the output and the log-sum-exp for the backward; False when it falls back to the math path that
    materializes the (T x T) weights. Flash needs compute capability 8.0 in 16 bits; the memory-efficient
    kernel takes fp32 and fp16 from 5.0, bf16 only from 8.0."""
    kind = device.split(':')[0]
    if kind != 'cuda':
        return kind == 'cpu'
    if torch.version.hip:
        return True
    cap = cuda_capability(device)
    return cap >= (8, 0) or (dtype != 'bfloat16' and cap >= (5, 0))


def autocast_context(device, dtype):
    kind = device.split(':')[0]
    if dtype == 'float32':
        return nullcontext()
    return torch.autocast(device_type=kind, dtype=getattr(torch, dtype))


def cpu_gemm_precision(dtype):
    """(torch dtype, label) of the GEMMs a CPU run of dtype performs: bf16 under bf16 autocast, else fp32."""
    return (torch.bfloat16, 'bf16') if dtype == 'bfloat16' else (torch.float32, 'fp32')


def measure_cpu_peak_flops(n=1024, seconds=0.3, dtype=torch.float32, again=False):
    """Achievable matmul FLOP/s on this CPU with torch's own GEMM, measured once per process (again=True:
    measured anew, and the new figure kept)."""
    key = (n, dtype, torch.get_num_threads())
    if again or key not in _cpu_peak_cache:
        a = torch.randn(n, n, dtype=dtype)
        b = torch.randn(n, n, dtype=dtype)
        for _ in range(2):
            a @ b
        best, t_end = float('inf'), time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        _cpu_peak_cache[key] = 2 * n ** 3 / best
    return _cpu_peak_cache[key]


def peak_flops(device, dtype='float32', given_tflops=0.0):
    """(FLOP/s, description) of the device's peak: given_tflops when set, the data-sheet figure of a known
    GPU for dtype (TF32 in fp32 where the GPU has it), a matmul measured here on CPU. A GPU the table lacks
    gives (None, why): MFU is then not reported rather than quoted against a guess."""
    if given_tflops and given_tflops > 0:
        return given_tflops * 1e12, f"the given peak_tflops ({given_tflops:g} TFLOP/s)"
    kind = device.split(':')[0]
    if kind == 'cuda':
        name = torch.cuda.get_device_name(device)
        key, figures = gpu_peak_entry(name)
        if figures is None:
            return None, f"{name} is not in the peak table: MFU n/a (set --peak_tflops=<dense TFLOP/s> to report it)"
        if dtype == 'float32':
            mode = 'tf32' if figures['tf32'] else 'fp32'
        else:
            mode = {'bfloat16': 'bf16', 'float16': 'fp16'}[dtype]
            if figures[mode] is None:  # bf16 emulated on the plain cores
                mode = 'fp32'
        tflops = figures[mode]
        return tflops * 1e12, f"{name} {mode.upper()} data sheet, dense ({tflops:g} TFLOP/s, as {key})"
    if kind == 'mps':
        return 10e12, "Apple GPU, assumed 10 TFLOP/s"
    gemm_dtype, mode = cpu_gemm_precision(dtype)
    flops = measure_cpu_peak_flops(dtype=gemm_dtype)
    return flops, f"CPU {mode} matmul measured here ({flops / 1e9:.1f} GFLOP/s, {torch.get_num_threads()} threads)"


def synchronize(device):
    kind = device.split(':')[0]
    if kind == 'cuda':
        torch.cuda.synchronize(device)
    elif kind == 'mps':
        torch.mps.synchronize()


def rss_bytes():
    """This process's resident memory now: Linux /proc, else psutil, else 0 (unknown)."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, AttributeError):
        pass
    try:
        import psutil
        return psutil.Process().memory_info().rss
    except ImportError:
        return 0


def peak_rss_bytes():
    """This process's peak resident memory so far (ru_maxrss: KiB on Linux, bytes on macOS; Windows has no
    `resource` module, so psutil's peak working set there), 0 when unknown."""
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == 'darwin' else 1024)
    except ImportError:
        pass
    try:
        import psutil
        info = psutil.Process().memory_info()
        return getattr(info, 'peak_wset', info.rss)
    except ImportError:
        return 0


def available_cores():
    """The CPU cores this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_threads(threads):
    """threads as a script's --threads gives it: 0 (the script's own choice) or a count up to a few times this
    machine's CPUs, else one UserError line. Threads beyond the CPUs only wait for each other, and a count in the
    tens of thousands makes OpenMP crash the process (a segfault, no message) when torch starts them."""
    limit = 4 * (os.cpu_count() or 1)
    if not isinstance(threads, int) or not 0 <= threads <= limit:
        raise UserError(f"threads must be 0 (chosen for you) or a count from 1 to {limit} (this machine has "
                        f"{os.cpu_count() or 1} CPUs), got {threads}")
    return threads


def pick_threads(time_step, requested=0, device='cpu', log=print):
    """The number of CPU threads torch uses, chosen and set: requested when > 0; what OMP_NUM_THREADS says when it is
    set; else the faster of 1 thread and all cores, by timing time_step() (one step of the real work, which must
    leave no trace) at each, alternately, before any clock starts. On a machine whose other programs keep the cores
    busy, several threads wait for each other at every step, and one thread can be several times faster. Off a CPU
    device it changes nothing. Returns the number of threads."""
    check_threads(requested)
    if device.split(':')[0] != 'cpu':
        return torch.get_num_threads()
    if requested > 0:
        torch.set_num_threads(requested)
        return requested
    if os.environ.get('OMP_NUM_THREADS'):
        return torch.get_num_threads()
    cores = available_cores()
    if cores <= 1:
        torch.set_num_threads(1)
        return 1

    def timed(n):
        torch.set_num_threads(n)
        t0 = time.perf_counter()
        time_step()
        return time.perf_counter() - t0
    timed(1)  # the first step pays for allocations and lazy set-up: not counted
    times = {1: [], cores: []}
    for _ in range(3):  # alternately, so a neighbour's burst falls on both; fewer rounds when one is far ahead
        for n in (1, cores):
            times[n].append(timed(n))
        fast, slow = sorted(times, key=lambda n: min(times[n]))
        if max(times[fast]) * 1.5 < min(times[slow]):
            break
    median = {n: sorted(t)[len(t) // 2] for n, t in times.items()}
    best = min(median, key=median.get)
    torch.set_num_threads(best)
    why = "the other cores are busy" if best == 1 else "the cores are free"
    log(f"threads: {best} ({median[1] * 1000:.0f} ms a step at 1 thread, {median[cores] * 1000:.0f} ms at {cores}: "
        f"{why}; --threads or OMP_NUM_THREADS chooses)")
    return best
