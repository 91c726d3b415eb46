"""core/training/planner.py's auto_batch with a memory plan simple enough to solve by hand."""

from core.training import planner


def test_auto_batch_takes_the_largest_fitting_divisor_of_the_rows():
    # each row costs 150 bytes; a CUDA budget of 1000 leaves 90% = 900 for the plan, so at most 6 rows fit
    total_for = lambda b, accumulation: 150 * b  # noqa: E731
    assert planner.SAFETY['cuda'] == 0.90
    # 12 rows do not fit at once; 6 rows fit and divide 12: two micro-steps of 6
    assert planner.auto_batch(total_for, 12, 1000, 'cuda') == (6, 2)
    # 10 rows: 6 fit but do not divide 10, so 5 rows in two micro-steps
    assert planner.auto_batch(total_for, 10, 1000, 'cuda') == (5, 2)
    # everything fits: one micro-step
    assert planner.auto_batch(total_for, 4, 1000, 'cuda') == (4, 1)
    # not one row fits
    assert planner.auto_batch(lambda b, a: 2000 * b, 4, 1000, 'cuda') == (0, 0)


def test_the_oom_line_keeps_the_tokens_of_every_process():
    # 8 rows x 16 tokens on each of 4 processes; 6 rows fit (900 of a 1000-byte budget at 150 a row), and 4 rows in
    # two micro-steps keep each process's 8 rows: 8 * 16 * 4 = 512 tokens a step, 2 * 4 = 8 micro-steps in the
    # gradient_accumulation_steps that train.py divides over the processes
    total_for = lambda b, accumulation: 150 * b  # noqa: E731
    msg = planner.oom_message(total_for, 8, 16, 1, 1000, 'cuda:0', world_size=4)
    assert '--batch_size=4 --gradient_accumulation_steps=8 keeps the 512 tokens per step' in msg
    single = planner.oom_message(total_for, 8, 16, 1, 1000, 'cuda:0', world_size=1)
    assert '--batch_size=4 --gradient_accumulation_steps=2 keeps the 128 tokens per step' in single


def test_cpu_budget_reads_memavailable_in_kibibytes(monkeypatch):
    import io
    text = "MemTotal:       8000000 kB\nMemFree:         100000 kB\nMemAvailable:    2000000 kB\n"
    monkeypatch.setattr(planner, 'open', lambda path, *a, **k: io.StringIO(text), raising=False)
    assert planner.device_budget('cpu') == 2000000 * 1024  # /proc/meminfo's kB are 1024 bytes
