"""What keeps a run safe while it trains: Ctrl-C and SIGTERM turned into a clean stop, and non-finite steps
counted on the device and turned into a divergence message when too many come in a row."""

import contextlib
import os
import signal
import sys
import time

import torch

from core.training import distributed


class Interrupts:
    """Ctrl-C (SIGINT) and SIGTERM. The first asks the loop to stop: it finishes the step (an evaluation stops at
    its next batch), saves and exits with 128 + the signal. A second quits at once (KeyboardInterrupt) without
    saving, except during a save: there it says that a save is under way, and a third abandons it (the atomic
    writer leaves the previous checkpoint). Within at_once() (the compile warm-up, where nothing is trained yet)
    the first one raises KeyboardInterrupt. After the loop, quit() makes any further one end the process at once,
    releasing the run lock (only clean-up is left)."""

    def __init__(self, announce=True, release=None):
        self.signum = 0  # the first signal received, 0 while none
        self.announce, self.release = announce, release
        self.saving, self.warned, self.immediate, self.abandoned = None, False, False, False
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)

    def on_signal(self, signum, frame):
        name = signal.Signals(signum).name
        if not self.signum:  # the first: a stop
            self.signum = signum
            if self.immediate:
                raise KeyboardInterrupt
            if self.saving:
                self.say(f"\n{name} received: saving {self.saving}, then the run stops (press Ctrl-C again to quit)\n")
            else:
                self.say(f"\n{name} received: finishing this step and saving (press Ctrl-C again to quit now)\n")
        elif self.saving and not self.warned:  # a second during a save: it may be nearly done
            self.warned = True
            self.say(f"\n{name} received: still saving {self.saving}; press Ctrl-C once more to abandon the save "
                     f"(the previous checkpoint stays as it was)\n")
        else:
            self.abandoned = bool(self.saving)
            raise KeyboardInterrupt

    def say(self, text):
        try:  # os.write, since a print here could land inside a print the signal interrupted
            if self.announce:
                os.write(sys.stdout.fileno(), text.encode())
        except (OSError, ValueError):  # no real stdout: the stop itself still happens
            pass

    @contextlib.contextmanager
    def saving_now(self, what):
        """A save of `what` is under way: a second signal says so instead of quitting."""
        self.saving, self.warned = what, False
        try:
            yield
        finally:
            self.saving = None

    @contextlib.contextmanager
    def at_once(self):
        self.immediate = True
        try:
            yield
        finally:
            self.immediate = False

    def exit_code(self):
        return 128 + (self.signum or signal.SIGINT)

    def quit(self):
        """From now on a signal ends the process at once instead of raising inside clean-up or atexit callbacks."""
        signal.signal(signal.SIGINT, self.quit_now)
        signal.signal(signal.SIGTERM, self.quit_now)

    def quit_now(self, signum, frame):
        if self.release is not None:
            self.release()
        os._exit(128 + signum)


def divergence_message(run, at, dtype, learning_rate, out_dir):
    """What to try, for the dtype in use, and what was kept."""
    advice = {'float16': "or train in bfloat16 (--dtype=bfloat16) or float32, whose range does not overflow",
              'bfloat16': "or train in float32 (--dtype=float32)"}.get(dtype, "or raise warmup_iters, or lower grad_clip")
    kept = [n for n in ('best.pt', 'ckpt.pt') if os.path.exists(os.path.join(out_dir, n))]
    saved = (f"{' and '.join(kept)} in {out_dir} {'are' if len(kept) > 1 else 'is'} untouched" if kept
             else "no checkpoint was saved yet")
    return (f"training diverged: {run} non-finite steps in a row at iteration {at}; lower learning_rate "
            f"(now {learning_rate:g}) {advice}. {saved}")


class BadSteps:
    """Non-finite steps counted on the device, so the loop never waits for it between log lines: the current run
    of them, the longest run since the last read, all of them, and the last one's iteration."""

    def __init__(self, device):
        self.run, self.worst, self.total, self.last = (torch.zeros((), dtype=torch.long, device=device)
                                                       for _ in range(4))
        self.reported = 0

    def count(self, finite, iter_num):
        self.run = torch.where(finite, 0, self.run + 1)
        torch.maximum(self.worst, self.run, out=self.worst)
        self.total += (~finite).long()
        self.last = torch.where(finite, self.last, iter_num)

    def read(self, step_stats, log=print):
        """The host's one read between log lines: (loss sum, grad norm sum, longest run of bad steps since the last
        read, the last bad iteration) from step_stats and the counts; new skipped steps are logged."""
        loss_sum, norm_sum, worst, total, last = torch.stack(
            [step_stats[0], step_stats[1], self.worst.double(), self.total.double(), self.last.double()]).tolist()
        self.worst.zero_()
        new, worst, total = int(total) - self.reported, int(worst), int(total)
        self.reported = total
        if new == 1:
            log(f"iter {int(last)}: non-finite loss or gradient norm, step skipped ({worst} in a row, {total} in all)")
        elif new > 1:
            log(f"iter {int(last)}: {new} non-finite steps skipped since the last log line (up to {worst} in a row, "
                f"{total} in all)")
        return loss_sum, norm_sum, worst, int(last)


def format_seconds(s):
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def compile_warm_up(warm_step, interrupts, out_dir, log=print):
    """torch.compile builds its kernels at the first forward and backward: warm_step() runs them before the clock
    starts. A signal here stops the process at once, as nothing is trained yet."""
    t0 = time.time()
    try:
        with interrupts.at_once():
            warm_step()
    except KeyboardInterrupt:
        interrupts.quit()
        print(f"interrupted during the compile warm-up: nothing was trained, so nothing to save; {out_dir} is as it "
              f"was", file=sys.stderr, flush=True)
        distributed.finish(clean=False)
        sys.exit(interrupts.exit_code())
    log(f"compiled in {time.time() - t0:.1f} s, before the clock starts")


def resume_command(ddp):
    """The command that goes on with a stopped run: its own arguments, with --init_from=resume."""
    args = ' '.join(a for a in sys.argv[1:] if not a.startswith(('--init_from=', '--ckpt=')))
    return f"{'torchrun ...' if ddp else 'python'} train.py {args} --init_from=resume"
