"""core/training/guards.py: bad-step counting on the device, the divergence message, signals to a stop."""

import os
import signal

import pytest
import torch

from core.training import guards


def test_bad_steps_count_runs_totals_and_the_last_one():
    bad = guards.BadSteps('cpu')
    pattern = [True, False, False, True, False, False, False, True]  # finite or not, iterations 0..7
    for it, ok in enumerate(pattern):
        bad.count(torch.tensor(ok), it)
    said = []
    loss, norm, worst, last = bad.read(torch.tensor([2.5, 0.5]), said.append)
    assert (loss, norm, worst, last) == (2.5, 0.5, 3, 6)
    assert said == ["iter 6: 5 non-finite steps skipped since the last log line (up to 3 in a row, 5 in all)"]
    bad.count(torch.tensor(False), 8)
    _, _, worst, last = bad.read(torch.tensor([1.0, 1.0]), said.append)
    assert (worst, last) == (1, 8)  # the run since the last read: the window restarts at every read
    assert said[-1] == "iter 8: non-finite loss or gradient norm, step skipped (1 in a row, 6 in all)"


def test_divergence_message_names_what_to_try_and_what_was_kept(tmp_path):
    msg = guards.divergence_message(10, 42, 'float16', 6e-4, str(tmp_path))
    assert msg.startswith('training diverged: 10 non-finite steps in a row at iteration 42; lower learning_rate '
                          '(now 0.0006)') and '--dtype=bfloat16' in msg and 'no checkpoint was saved yet' in msg
    (tmp_path / 'ckpt.pt').write_bytes(b'x')
    (tmp_path / 'best.pt').write_bytes(b'x')
    assert f'best.pt and ckpt.pt in {tmp_path} are untouched' in guards.divergence_message(3, 1, 'float32', 1, str(tmp_path))


def test_a_signal_asks_for_a_stop_and_a_second_quits():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        interrupts = guards.Interrupts(announce=False)
        assert interrupts.signum == 0
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupts.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        assert interrupts.signum == signal.SIGTERM  # the first one is what the exit code reports
        assert interrupts.exit_code() == 143  # 128 + 15, as a shell reports a process SIGTERM ended
        assert guards.Interrupts(announce=False).exit_code() == 130  # none yet: Ctrl-C's 128 + 2
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def test_format_seconds():
    assert [guards.format_seconds(s) for s in (0, 59.9, 61, 3600, 3 * 3600 + 5 * 60)] == \
        ['0m00s', '0m59s', '1m01s', '1h00m', '3h05m']
