"""
Document-aware windows against nanoGPT's random windows, on Tiny Shakespeare with each speech a document.

    python studies/doc_aware.py                    # two 120 s trainings, then the scores
    python studies/doc_aware.py --seconds=30       # a quicker, noisier look

One torch thread per run by default (--threads=0 keeps torch's default).

1. out_dir/speeches: Tiny Shakespeare in characters, every speech (blank-line separated) a document
   followed by <|endoftext|> (python data/prepare.py --doc_sep=blank --tokenizer=char).
2. Two train.py runs of config/train_shakespeare_char_cpu.py with the same seed and the same training
   time (max_seconds, a time-based schedule, evaluations off the clock): --doc_aware=False (random
   windows, attention across speeches) and --doc_aware=True, side by side (one thread each) so that
   whatever else runs on the machine slows both alike; --together=False runs them one after another.
3. Scores, the same for both runs:
   - val loss over every val token, once each, in the same consecutive windows (eval_full's windows),
     each model scored both with and without the document mask; nats per character, so they compare;
   - replies: from `seeds` prompts '<|endoftext|>NAME:\\n' (the speakers of the first val speeches),
     sampled with the same seed per prompt, the share that end by themselves (an <|endoftext|> or a blank
     line) within 200 tokens, and their median length;
   - training speed: steps of one model alternating between the two loaders in this process, median
     tokens/s of each (the runs' own tokens/s are printed too, but they ran at different moments).
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from configurator import config_keys, configure  # noqa: E402
from core import fileio  # noqa: E402
from core.errors import UserError, install_excepthook  # noqa: E402

# -----------------------------------------------------------------------------
out_dir = 'out-doc-aware'
config = 'config/train_shakespeare_char_cpu.py'
seconds = 120.0  # training time of each run
seeds = 60  # prompts (one sampling seed each)
max_new_tokens = 200
temperature = 0.8
speed_steps = 30  # timed training steps per loader in the speed comparison
seed = 1337
threads = 1  # torch threads of each run and of this process: on a shared machine one thread is steadier
together = True  # run the two trainings at the same time, so that other load slows both alike
# -----------------------------------------------------------------------------
install_excepthook()
configure(globals(), config_keys(globals()))
fileio.check_folder('out_dir', out_dir)  # a file (or under one): one line now, not a traceback later


def prepare_speeches():
    from core.data import prepare
    folder = os.path.join(os.path.abspath(out_dir), 'speeches')
    prepare.prepare(os.path.join(REPO, 'data', 'shakespeare_char', 'input.txt'), folder, tokenizer='char',
                    doc_sep='blank', progress=False)
    return folder


def start(name, data_dir, doc_aware):
    """start one train.py run; returns (run folder, process, log file)."""
    run_dir = os.path.join(os.path.abspath(out_dir), name)
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, os.path.join(REPO, 'train.py'), os.path.join(REPO, config), f'--dataset={data_dir}',
           f'--out_dir={run_dir}', f'--doc_aware={doc_aware}', f'--max_seconds={seconds}', '--lr_schedule=time',
           '--timed_eval=False', '--max_iters=100000000', '--eval_interval=100000000', '--eval_iters=1',
           f'--seed={seed}', '--log_interval=100']
    print(f"[{name}] python train.py {' '.join(cmd[2:])}", flush=True)
    os.makedirs(run_dir)
    log = open(os.path.join(run_dir, 'train.log'), 'w')
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    return run_dir, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env), log


def finish(name, run_dir, proc, log):
    code = proc.wait()
    log.close()
    if code != 0:
        raise UserError(f"the {name} run failed (exit {code}); see {os.path.join(run_dir, 'train.log')}")
    with open(os.path.join(run_dir, 'metrics.jsonl')) as f:
        last = [r for r in map(json.loads, filter(str.strip, f)) if 'val_loss' in r][-1]  # the last eval
    return run_dir, last


def replies(model, tok, names):
    """(share that ended, median length of those) over one prompt per name, seed i for prompt i."""
    import torch
    ended, lengths = 0, []
    for i, name in enumerate(names):
        prompt = [tok.eot_token] + tok.encode_ordinary(f"{name}:\n")
        g = torch.Generator().manual_seed(seed + i)
        out = model.generate(torch.tensor([prompt]), max_new_tokens, temperature=temperature, generator=g,
                             stop_token=tok.eot_token)[0, len(prompt):].tolist()
        cut = out.index(tok.eot_token) if tok.eot_token in out else len(out)
        blank = tok.decode(out[:cut]).find('\n\n')  # a char vocabulary: text index = token index
        stop = min(cut, blank if blank >= 0 else len(out))
        if stop < max_new_tokens:
            ended += 1
            lengths.append(stop)
    return ended / len(names), (statistics.median(lengths) if lengths else float('nan'))


def speed(data):
    """Median tokens/s of training steps with each loader, alternating, on one model and optimizer."""
    import torch
    from model import GPT, GPTConfig
    cfg = {}
    exec(open(os.path.join(REPO, config)).read(), {}, cfg)
    model = GPT(GPTConfig(n_layer=cfg['n_layer'], n_head=cfg['n_head'], n_embd=cfg['n_embd'],
                          block_size=cfg['block_size'], vocab_size=data.vocab_size, bias=False))
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), 'cpu')
    B, T = cfg['batch_size'], cfg['block_size']
    gen = torch.Generator().manual_seed(seed)
    times = {False: [], True: []}
    for k in range(speed_steps + 3):
        for doc_aware in (False, True):
            t0 = time.perf_counter()
            starts = data.sample_starts('train', B, T, gen, doc_aware)
            x, y = data.get_batch('train', B, T, None, starts=starts)
            loss = model(x, y, docs=data.documents(x) if doc_aware else None)[1]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if k >= 3:  # the first steps load kernels
                times[doc_aware].append(time.perf_counter() - t0)
    return {d: B * T / statistics.median(t) for d, t in times.items()}


def main():
    # every mistake stops here, before the speeches are prepared and two trainings started
    if not os.path.isfile(os.path.join(REPO, config)):
        raise UserError(f"config file '{config}' not found")
    if seconds <= 0 or seeds < 1 or max_new_tokens < 1 or speed_steps < 1 or temperature < 0:
        raise UserError("seconds must be positive; seeds, max_new_tokens and speed_steps at least 1; "
                        "temperature not negative")
    from core.hardware import check_threads
    check_threads(threads)
    import torch
    if threads:
        torch.set_num_threads(threads)
    from core.training import checkpoint
    from core.data import tokenizer as tk
    from core.data.loader import Dataset
    from core.evaluation.exact import exact_loss
    load = ' '.join(f"{x:.2f}" for x in os.getloadavg())
    data_dir = prepare_speeches()
    data = Dataset(data_dir)
    tok = tk.load(data_dir)
    val_text = tok.decode(data.split('val'))
    names = [d.split('\n', 1)[0].rstrip(':') for d in val_text.split('<|endoftext|>') if ':\n' in d][:seeds]
    results, runs = {}, {}
    for name, doc_aware in (('classic', False), ('doc_aware', True)):
        runs[name] = start(name, data_dir, doc_aware)
        if not together:
            runs[name] = finish(name, *runs[name])
    for name in ('classic', 'doc_aware'):
        run_dir, last = finish(name, *runs[name]) if together else runs[name]
        model, _ = checkpoint.load_model(os.path.join(run_dir, 'ckpt.pt'))
        model.eval()
        torch.manual_seed(seed)
        block = model.config.block_size
        r = dict(iters=last['iter'], train_seconds=last['train_seconds'],
                 tokens_per_s=last['tokens'] / max(last['train_seconds'], 1e-9),
                 val_plain=exact_loss(model, data, block_size=block),
                 val_masked=exact_loss(model, data, block_size=block, doc_aware=True))
        r['ended'], r['median_length'] = replies(model, tok, names)
        results[name] = r
        print(f"[{name}] {r}", flush=True)
    fast = speed(data)
    results['speed'] = {'classic': fast[False], 'doc_aware': fast[True], 'ratio': fast[True] / fast[False]}
    load_after = ' '.join(f"{x:.2f}" for x in os.getloadavg())
    how = 'side by side' if together else 'one after the other'
    print(f"\n{seconds:g} s of training each ({how}), seed {seed}, {len(names)} prompts, "
          f"load average {load} -> {load_after}")
    print(f"{'run':<10}{'iters':>7}{'val (no mask)':>15}{'val (doc mask)':>16}{'replies ended':>15}{'median len':>12}"
          f"{'run tok/s':>11}")
    for name in ('classic', 'doc_aware'):
        r = results[name]
        print(f"{name:<10}{r['iters']:>7}{r['val_plain']:>15.4f}{r['val_masked']:>16.4f}{r['ended'] * 100:>14.0f}%"
              f"{r['median_length']:>12.0f}{r['tokens_per_s']:>11,.0f}")
    s = results['speed']
    print(f"training steps side by side: classic {s['classic']:,.0f} tok/s, doc_aware {s['doc_aware']:,.0f} tok/s "
          f"(ratio {s['ratio']:.3f}, median of {speed_steps} steps each)")
    results.update(seconds=seconds, seed=seed, prompts=len(names), load=[load, load_after], together=together)
    fileio.write_json(os.path.join(out_dir, 'results.json'), results)


if __name__ == '__main__':
    main()
