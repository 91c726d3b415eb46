"""plan.py: the config it writes trains; bad budgets, small datasets, existing plans and interrupts end cleanly;
the search's pieces (the schedule, successive halving, the size rule) against hand-worked cases."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, make_char_dataset, run_inprocess, run_script
from core.training import search


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_char_dataset(str(tmp_path_factory.mktemp('plan_data')), 200_000)


def test_a_budget_too_small_names_the_smallest_workable_one(tmp_path, data):
    code, out, err = run_inprocess('plan.py', '--minutes=0.2', f'--dataset={data}', f'--out={tmp_path / "p.py"}')
    assert code == 2 and 'Traceback' not in err, err
    assert err.count('error:') == 1 and '20 s' in err and '--minutes=0.34' in err
    assert not os.path.exists(tmp_path / 'p.py')


def test_a_dataset_too_small_is_refused_with_its_numbers(tmp_path):
    small = make_char_dataset(str(tmp_path / 'small'), 5_000)
    code, out, err = run_inprocess('plan.py', '--minutes=1', f'--dataset={small}', f'--out={tmp_path / "p.py"}')
    assert code == 2 and 'Traceback' not in err, err
    assert 'too small' in err and '4,500 train' in err and '500 val' in err
    assert not os.path.exists(tmp_path / 'p.py')


def test_an_existing_plan_is_kept_without_overwrite(tmp_path, data):
    dest = tmp_path / 'p.py'
    dest.write_text('# mine\n')
    code, out, err = run_inprocess('plan.py', '--minutes=1', f'--dataset={data}', f'--out={dest}')
    assert code == 2 and '--overwrite=True' in err and 'Traceback' not in err, err
    assert dest.read_text() == '# mine\n'


@pytest.mark.parametrize('minutes', ['1e300', '1e9', '43201'])
def test_a_budget_past_any_plan_is_one_line(tmp_path, data, minutes):
    # 1e300 minutes hung in the search's schedule (a second at a time up to 1e300 / 63), 1e9 took minutes there,
    # and the numbers that got through were printed 300 digits long
    code, out, err = run_inprocess('plan.py', f'--minutes={minutes}', f'--dataset={data}', f'--out={tmp_path / "p.py"}')
    assert code == 2 and 'Traceback' not in err and err.count('error:') == 1, err
    assert '43,200 minutes, 30 days' in err and not os.path.exists(tmp_path / 'p.py')


def test_the_plan_trains(tmp_path, data):
    # a budget too short for a search (on an idle machine, and more so on a busy one): measure, size, write;
    # then train.py runs the file as written (with the clock and compile cut for the test)
    dest = tmp_path / 'plan.py'
    r = run_script('plan.py', '--minutes=2', f'--dataset={data}', f'--out={dest}', timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    text = dest.read_text()
    for why in ('tok/s', 'per parameter', 'batch and sequence', 'learning rates', 'expected val loss', 'max_seconds'):
        assert why in text, why
    cfg = {}
    exec(text, cfg)
    assert cfg['max_seconds'] <= 120 and cfg['dataset'] == data
    # the clock ends the run; or, where it would read the 180k train tokens more than MAX_EPOCHS times, its steps
    # do, or, where those steps might not fit at the eager speed (a busy machine), an earlier clock
    capped, early_clock = 'the most a plan reads them' in text, '(by the clock: ' in text
    assert cfg['lr_schedule'] == ('iters' if capped and not early_clock else 'time')
    # no search at 2 minutes: the recipe's rates, and the largest batch that leaves the run enough steps
    assert cfg['muon_lr'] == search.RECIPE['muon_lr'] * search.PRIOR_ARM[0]
    steps = float(text.split('; about ')[1].split(' steps')[0].replace(',', ''))
    assert cfg['batch_size'] == search.prior_batch(steps * cfg['batch_size'] * 128, 128)
    spent = float(text.split('the plan took ')[1].split(' s')[0])
    if early_clock:
        assert capped and cfg['max_seconds'] < 120 - spent - 1.5
    else:
        assert cfg['max_seconds'] == pytest.approx(120 - spent, abs=1.5)  # the plan's own time counts in the budget
    out = tmp_path / 'run'
    r = run_script('train.py', str(dest), f'--out_dir={out}', '--compile=False', '--max_seconds=2',
                   '--eval_full=False', '--eval_iters=2', timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'val loss' in r.stdout and os.path.exists(out / 'ckpt.pt')


@pytest.mark.parametrize('rate', [400.0, 60_000.0])
def test_no_search_where_a_trial_would_take_too_few_steps(tmp_path, data, monkeypatch, rate):
    # every shape faked to train at `rate` tokens/s. At 400 (a 50k vocabulary's head on a CPU) a first-rung trial of
    # 10 s takes 2 steps of 16 x 128, under MIN_TRIAL_STEPS (40): no search, the recipe's rates and the batch rule.
    # At 60,000, 293 steps: the search runs
    monkeypatch.setattr(search, 'measure_throughput', lambda *a, **k: rate)
    searched = []

    def halving(arms, first_seconds, share, started, run, overhead, trials):  # x2 wins, 1.9 then 1.7
        searched.append(arms)
        for number, (seconds, loss) in enumerate(((10, 1.9), (20, 1.7)), 1):
            trials.append(search.Trial(number, (2.0, 16), seconds))
            trials[-1].val_loss = loss
        return trials, (2.0, 16)
    monkeypatch.setattr(search, 'successive_halving', halving)
    dest = tmp_path / 'p.py'
    code, out, err = run_inprocess('plan.py', '--minutes=20', f'--dataset={data}', f'--out={dest}')
    assert code == 0 and 'Traceback' not in err, err
    assert bool(searched) == (rate > 400) and ('too few to rank' in out) == (rate == 400), out
    text = dest.read_text()
    cfg = {}
    exec(text, cfg)
    assert cfg['muon_lr'] == search.RECIPE['muon_lr'] * (2 if searched else 1)
    # the expected loss: the chosen candidate's longest trial as a bound, no curve drawn through trials so short
    assert ("# expected val loss: below 1.700, the chosen candidate's after 20 s at width 64" in text) == bool(searched)
    if rate == 400:  # about 0.78M tokens compiled in 20 minutes: 254 steps of 24 rows, under 300; 381 of 16
        assert cfg['batch_size'] == 16, dest.read_text()


def test_the_plan_measures_at_the_threads_its_run_will_pick(tmp_path, data, monkeypatch):
    # no OMP_NUM_THREADS, two cores, and steps 20x faster at two threads than at one (a quiet machine; on a busy
    # one it is the other way round): the shapes are measured at two, as train.py will pick for the run, and at the
    # full 16 rows although a one-thread step of 16 would take longer than a shape's 1.5 s (the rows are set again
    # at the threads picked). Measured at one thread, every rate would be 20x lower
    import time
    import torch
    from core import hardware
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.setattr(hardware, 'available_cores', lambda: 2)
    rows = []

    def fake(model, opt, get_batch, n, ctx, device):
        rows.append(get_batch()[0].shape[0])
        seconds = 0.2 if torch.get_num_threads() == 1 else 0.01
        time.sleep(seconds * n)
        return [seconds] * n
    monkeypatch.setattr(search, 'timed_train_steps', fake)
    dest = tmp_path / 'p.py'
    code, out, err = run_inprocess('plan.py', '--minutes=1', f'--dataset={data}', f'--out={dest}')
    assert code == 0 and 'Traceback' not in err, err
    # the fake's sleeps, timed: 200 and 10 ms, longer by whatever else the machine is doing
    one, two = map(int, re.search(r'threads: 2 \((\d+) ms a step at 1 thread, (\d+) ms at 2: the cores are free',
                                  out).groups())
    assert one >= 200 and 10 <= two < one / 2, out
    text = dest.read_text()
    assert '(bfloat16, 2 thread(s))' in text or '(float32, 2 thread(s))' in text, text
    measured = text.split('Measured, tok/s: ')[1].split('\n')[0].split(', ')
    assert measured and all(m.endswith(' 204,800') for m in measured), text  # 16 x 128 tokens in 10 ms
    cfg = {}
    exec(text, cfg)
    assert cfg['threads'] == 0  # the run picks its own at its start, as the plan did


def test_a_search_whose_trials_all_failed_falls_back_to_the_batch_rule(tmp_path, data, monkeypatch):
    monkeypatch.setattr(search, 'measure_throughput', lambda *a, **k: 60_000.0)

    def all_failed(arms, first_seconds, share, started, run, overhead, trials):
        failed = search.Trial(1, arms[1], first_seconds)
        failed.error = 'out of memory'
        trials.append(failed)
        return trials, None
    monkeypatch.setattr(search, 'successive_halving', all_failed)
    dest = tmp_path / 'p.py'
    code, out, err = run_inprocess('plan.py', '--minutes=20', f'--dataset={data}', f'--out={dest}')
    assert code == 0 and 'Traceback' not in err, err
    text = dest.read_text()
    assert 'every trial failed' in text and "every one of the search's 1 trials failed" in text
    steps = float(text.split('; about ')[1].split(' steps')[0].replace(',', ''))
    cfg = {}
    exec(text, cfg)
    assert cfg['batch_size'] == search.prior_batch(steps * cfg['batch_size'] * 128, 128)
    assert cfg['muon_lr'] == search.RECIPE['muon_lr']  # not the failed arm's rates (x2)


def test_an_interrupted_search_writes_no_config(tmp_path, data):
    # a small trial overhead and the largest share make room for a search whatever the load; Ctrl-C during the
    # first trial
    dest = tmp_path / 'plan.py'
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'plan.py'), '--minutes=8', f'--dataset={data}',
                             f'--out={dest}', f'--work_dir={tmp_path / "trials"}', '--trial_overhead=1',
                             '--search_share=0.25'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'),
                            # as from a terminal: a suite started in the background (`cmd &`) ignores SIGINT, and
                            # a Python started ignoring it never raises KeyboardInterrupt
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    try:
        for line in proc.stdout:  # text mode reads the progress bar's carriage returns as line ends
            lines.append(line)
            if line.strip().startswith('trial 1 |') and 'train loss' in line:
                break  # the trial's bar shows it training: train.py gets the signal too, as from a terminal
            if line.strip().startswith(('val loss', 'failed')):
                break  # trial 1 ended without a bar
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = ''.join(lines) + out
    assert any(l.strip().startswith('trial 1:') for l in lines), out + err
    assert 'train loss' in lines[-1] and ' s, ' in lines[-1], out + err  # the bar: seconds of the trial's, its loss
    assert proc.returncode == 130, err
    assert 'no config was written' in err and 'Traceback' not in err, err
    assert 'trial  seconds' in out  # the table, empty so far
    assert not os.path.exists(dest)


def test_a_trials_bar_shows_its_seconds_and_latest_loss():
    import io
    trial, out = search.Trial(3, (1.0, 16), 20.0), io.StringIO()
    bar = search.TrialBar(trial, file=out)
    trial.curve = [(4.0, 4.17), (9.0, 2.61), (16.5, 2.345)]  # seconds since the process started, train loss
    bar(trial)
    assert out.getvalue().split('\r')[-1].startswith('    trial 3 |')
    assert out.getvalue().split('\r')[-1].endswith('| 12/20 s, train loss 2.345')  # 16.5 - 4.0 s of training
    trial.curve.append((30.0, 2.1))  # the evaluation after the clock: the bar stops at the trial's seconds
    bar(trial)
    assert out.getvalue().split('\r')[-1].endswith('| 20/20 s, train loss 2.100')
    bar.close()
    quiet = io.StringIO()
    bar = search.TrialBar(trial, enabled=False, file=quiet)
    bar(trial)
    bar.close()
    assert quiet.getvalue() == ''


def test_an_interrupted_search_keeps_the_trials_so_far():
    def run(trial):
        if trial.number == 3:
            raise KeyboardInterrupt
        trial.val_loss, trial.wall = 1.0 / trial.number, trial.seconds
        return trial
    trials = []
    with pytest.raises(KeyboardInterrupt):
        search.successive_halving(search.ARMS[:4], 4.0, 1e9, time.time(), run, 0, trials)
    assert [t.number for t in trials] == [1, 2]
    table = search.trials_table(trials)
    assert '0.5000' in table and '1.0000' in table


def test_a_run_without_a_search_gets_the_largest_batch_that_leaves_it_enough_steps():
    # FEW_STEPS = 300 steps of 128-token rows: 1.4M tokens (Tiny Shakespeare's characters for a minute on a 2-core
    # CPU) are 455 steps of 24 rows; 0.68M (the same on a busy machine) are 221 of 24 and 332 of 16, so 16; 0.5M
    # (half a minute) 163 of 24 and 244 of 16, so 8 rows (488 steps); GPT-2 BPE's 0.11M give even 4 rows only 215
    # steps, and 4 it is; exactly 300 steps of 16 rows are enough
    assert search.FEW_STEPS == 300 and search.PRIOR_BATCHES == (24, 16, 8, 4)
    assert search.prior_batch(1.4e6, 128) == 24
    assert search.prior_batch(0.68e6, 128) == 16
    assert search.prior_batch(0.5e6, 128) == 8
    assert search.prior_batch(0.11e6, 128) == 4
    assert search.prior_batch(300 * 16 * 128, 128) == 16 and search.prior_batch(300 * 16 * 128 - 1, 128) == 8
    assert search.prior_batch(1e6, 32) == 24  # shorter rows, more of them: 1302 steps


def test_the_schedule_fits_the_share():
    # trials of at least 10 s: 4 arms from 10 s, with 5 s of start-up each, take 4 x 15 + 2 x 25 + 1 x 45 = 155 s
    # (from 11 s: 167); below 155 s, 3 arms fit
    assert search.MIN_TRIAL_SECONDS == 10
    assert search.schedule(9, 160, overhead=5) == (4, 10.0)
    assert search.schedule(9, 154, overhead=5) == (3, 11.0)  # 3 x 16 + 2 x 27 + 1 x 49 = 151
    assert search.schedule(9, 50, overhead=5) == (0, 0.0)  # two arms of 10 s and the winner's 20 s need 55 s
    # 9 arms in rungs of 9, 5, 3, 2 and 1: 9 + 5 x 2 + 3 x 4 + 2 x 8 + 16 = 63 s for each second of the first rung,
    # and 20 start-ups of 5 s: (10,000 - 100) / 63 = 157.1
    assert search.schedule(9, 10_000, overhead=5) == (9, 157.0)
    # a budget of eons is solved, not counted up to a second at a time (which never ended: plan.py --minutes=1e300)
    assert search.schedule(9, 1e300, overhead=5) == (9, pytest.approx(1e300 / 63))


def test_successive_halving_keeps_the_better_half_and_doubles_their_time():
    # arms whose loss is their number over the seconds: the lowest number wins, and each rung has half the arms
    def run(trial):
        trial.val_loss, trial.wall = trial.arm[0] + 1 / trial.seconds, trial.seconds
        return trial
    arms = [(3.0, 16), (1.0, 16), (4.0, 16), (2.0, 16), (5.0, 16)]
    trials, best = search.successive_halving(arms, 4.0, 1e9, time.time(), run, overhead=0)
    assert best == (1.0, 16)
    assert [(t.arm[0], t.seconds) for t in trials] == [(3, 4), (1, 4), (4, 4), (2, 4), (5, 4),
                                                       (1, 8), (2, 8), (3, 8), (1, 16), (2, 16)]


def test_successive_halving_stops_at_its_share():
    def run(trial):
        trial.val_loss, trial.wall = 1.0, trial.seconds + 1
        return trial
    started = time.time()
    trials, best = search.successive_halving([(1.0, 16), (2.0, 16), (0.5, 16)], 4.0, 0.5, started, run, overhead=1)
    assert trials == [] and best is None


def test_the_size_rule_picks_the_nearest_tokens_per_parameter():
    # the target grows as the square root of the tokens: 2.5 per parameter at 1.5M tokens, 5 at 6M
    assert search.tokens_per_param(1.5e6) == pytest.approx(2.5) and search.tokens_per_param(6e6) == pytest.approx(5)
    # every shape at 1M tokens/s for 10 s (x a compile gain of about 1.61): 16.1M tokens, a target of about
    # 2.5 x sqrt(16 / 1.5) = 8.16 per parameter; 4 x 192 (1.77M parameters, ratio 9.1) is nearer than 6 x 192
    # (2.66M, 6.1)
    rates = {s: 1e6 for s in search.SHAPES}
    shape, tokens, n = search.pick_shape(rates, 10, 'cpu')
    assert tokens == pytest.approx(16.1e6, rel=1e-3) and n == pytest.approx(12 * 192 ** 2 * 4, rel=0.01)  # and gains
    assert shape == (4, 192)


def test_a_run_that_would_re_read_the_corpus_more_than_max_epochs_is_sized_for_what_it_reads():
    # 100k tokens/s eager for 600 s is about 97M tokens: a target of 20 per parameter, where 4 x 192 (55 per
    # parameter) is nearer than 3 x 128 (165). Capped at 3M tokens (a 375k-token corpus read 8 times) the target is
    # 2.5 x sqrt(2) = 3.54: 3 x 128 reads 5.1 per parameter (1.44x over), 4 x 192 1.7 (2.1x under, x3)
    rates = {(3, 128): 1e5, (4, 192): 1e5}
    assert search.pick_shape(rates, 600, 'cpu')[0] == (4, 192)
    shape, tokens, n = search.pick_shape(rates, 600, 'cpu', max_tokens=3e6)
    assert shape == (3, 128) and tokens == 3e6 and n == pytest.approx(12 * 128 ** 2 * 3, rel=0.01)  # and gains


def _plan_at(rate, tmp_path, data, monkeypatch):
    """A 20-minute plan with every shape measured at `rate` tokens/s: (its text, its keys, the seconds it left)."""
    monkeypatch.setattr(search, 'measure_throughput', lambda *a, **k: rate)
    dest = tmp_path / 'p.py'
    code, out, err = run_inprocess('plan.py', '--minutes=20', f'--dataset={data}', f'--out={dest}')
    assert code == 0 and 'Traceback' not in err, err
    text = dest.read_text()
    cfg = {}
    exec(text, cfg)
    return text, cfg, float(text.split('leaving the other ')[1].split(' s')[0])


def test_the_plan_stops_its_run_when_it_has_read_the_corpus_max_epochs_times(tmp_path, data, monkeypatch):
    # 60k tokens/s for 20 minutes would read the 180k train tokens hundreds of times: the run stops after 8
    rate = 60_000.0
    monkeypatch.setattr(search, 'successive_halving', lambda arms, *a: ([], None))
    text, cfg, left = _plan_at(rate, tmp_path, data, monkeypatch)
    n_train = 180_000
    assert search.MAX_EPOCHS == 8 and 'reads the 180,000 train tokens 8 times, the most a plan reads' in text, text
    # counted in steps, and the schedule over them: 1.44M tokens, 469 steps of 24 x 128 (the batch rule's 300 hold)
    assert cfg['batch_size'] == 24 and cfg['max_iters'] == cfg['lr_decay_iters'] == 469 == math.ceil(8 * n_train / 3072)
    assert cfg['lr_schedule'] == 'iters' and cfg['decay_lr']
    # the clock only bounds it: the rest of the budget, which at 60k tokens/s (x1.6 compiled) is 15 s of work
    assert left > 1000 and cfg['max_seconds'] == pytest.approx(left, abs=0.6)
    n = search.non_embedding_params(search.model_config(cfg['n_layer'], cfg['n_embd'], 65, 128))
    seconds = 8 * n_train / (rate * search.compile_gain('cpu', cfg['n_embd'], 65, n))
    assert f'469 steps of 24 x 128, about {seconds:.0f} of the {left:.0f} s left' in text, text


def test_the_clock_ends_a_run_whose_capped_steps_might_not_fit_its_time(tmp_path, data, monkeypatch):
    # 1,000 tokens/s eager: in the 1,080-odd s left, about 1.1M tokens eager and 1.7M at the compile gain's 1.6x,
    # around the 1.44M of 8 readings. Steps that only fit at the gain could be cut short by the clock before their
    # warmdown, so the clock stops the run where the gain says it will have read 8 times: the time schedule ends
    # there, however many readings that turns out to be
    rate = 1_000.0
    text, cfg, left = _plan_at(rate, tmp_path, data, monkeypatch)
    assert cfg['lr_schedule'] == 'time' and cfg['max_iters'] == 10 ** 9 and 'the most a plan reads them' in text
    with open(os.path.join(data, 'meta.json')) as f:
        vocab = json.load(f)['vocab_size']
    n = search.non_embedding_params(search.model_config(cfg['n_layer'], cfg['n_embd'], vocab, 128))
    gain = search.compile_gain('cpu', cfg['n_embd'], vocab, n)
    assert rate * left < 8 * 180_000 < rate * gain * left
    assert cfg['max_seconds'] == pytest.approx(8 * 180_000 / (rate * gain), abs=0.06), text  # about 890 s
    assert f'it stops after about {cfg["max_seconds"]:.0f} of the {left:.0f} s left (by the clock' in text, text


def test_the_compile_gain_moves_from_the_blocks_to_the_head_as_the_vocabulary_grows():
    # (1.6, 3.1) weighted by the head's share of the weights: 4 x 192 with 65 characters, 12,480 of 1,783,680
    # (0.7%): 1.6105; 3 x 96 with GPT-2's 50,304 tokens, 4,829,184 of 5,161,632 (93.6%): 3.003
    assert search.COMPILE_GAIN['cpu'] == (1.6, 3.1)
    def n(shape, vocab_size):
        return search.non_embedding_params(search.model_config(*shape, vocab_size, 128))
    assert n((4, 192), 65) == 1_771_200 and n((3, 96), 50304) == 332_448
    assert search.compile_gain('cpu', 192, 65, n((4, 192), 65)) == pytest.approx(1.6105, abs=1e-4)
    assert search.compile_gain('cpu', 96, 50304, n((3, 96), 50304)) == pytest.approx(3.003, abs=1e-3)
    assert search.compile_gain('mps', 96, 50304, n((3, 96), 50304)) == 1.0  # not measured there: no gain assumed


def test_measuring_walks_from_the_recipe_to_the_target_and_stops_at_the_deadline(monkeypatch):
    # fake rates of 1M tokens/s (x1.6 compiled). Over 0.3 s: 0.49M tokens, a target of 1.42 per parameter; the
    # recipe's 3 x 128 (591k) would see 0.82, 1.73x under (a distance of 3 x 0.55), so one step down to 3 x 96
    # (332k, 1.47, 3% over), past the target, ends it
    measured = []
    monkeypatch.setattr(search, 'measure_throughput', lambda shape, *a, **k: measured.append(shape) or 1e6)
    rates = search.measure_shapes(65, 'cpu', 'float32', 128, 16, 0.3, time.time() + 1e9, log=lambda *a: None)
    assert measured == [(3, 128), (3, 96)] and list(rates) == measured
    assert search.pick_shape(rates, 0.3, 'cpu')[0] == (3, 96)
    # over 0.5 s the recipe is 1.34x under (1.37 against 1.84) and 3 x 96 1.33x over (2.45): the same ratio, and the
    # smaller model wins, as a larger one's distance counts OVERSIZE_COST = 3 times
    assert search.OVERSIZE_COST == 3
    assert search.pick_shape({(3, 96): 1e6, (3, 128): 1e6}, 0.5, 'cpu')[0] == (3, 96)
    assert search.distance(-0.5) == 1.5 and search.distance(0.5) == 0.5
    # over 10 s: 16M tokens, a target of 8.2 per parameter: up from 3 x 128 to 4 x 192 (9.1); 6 x 192 would see
    # 6.05 at most (no faster than 4 x 192), further from 8.2 than 9.1 is, so it is not measured
    measured.clear()
    search.measure_shapes(65, 'cpu', 'float32', 128, 16, 10.0, time.time() + 1e9, log=lambda *a: None)
    assert measured == [(3, 128), (4, 128), (4, 160), (4, 192)]
    # the smallest shapes only: from the largest of them, down to the end of the list
    measured.clear()
    search.measure_shapes(65, 'cpu', 'float32', 128, 16, 1e-3, time.time() + 1e9, search.SHAPES[:2],
                          log=lambda *a: None)
    assert measured == [(3, 64), (2, 64)]
    measured.clear()
    search.measure_shapes(65, 'cpu', 'float32', 128, 16, 10.0, time.time() - 1, log=lambda *a: None)
    assert measured == [(3, 128)]  # past the deadline: the one shape a plan needs


def test_a_machine_too_slow_to_get_past_the_warmup_is_refused_in_one_line(tmp_path, data, monkeypatch):
    # a vocabulary of a million ids on this CPU: 13 tok/s eager. The plan wrote a config for 4 steps of 4 x 128, and
    # it took 126 s of a 1-minute budget, measuring six probe and timed steps of 10 s for each of two shapes
    monkeypatch.setattr(search, 'measure_throughput', lambda *a, **k: 13.0)
    monkeypatch.setattr(search, 'compile_gain', lambda *a: 1.0)
    dest = tmp_path / 'p.py'
    code, out, err = run_inprocess('plan.py', '--minutes=1', f'--dataset={data}', f'--out={dest}')
    assert code == 2 and 'Traceback' not in err and err.count('error:') == 1, err
    # the warmup twice, 40 steps of 4 x 128 = 20,480 tokens at 13 tok/s, is 1,575 s: over 26 minutes with the rest
    minutes = float(re.search(r'--minutes=([\d.]+)', err).group(1))
    assert 'fewer than the 40' in err and 1575 / 60 < minutes < 1575 / 60 / 0.75 + 1, err
    assert not dest.exists()


def test_a_slow_shape_is_measured_by_its_probe_steps_alone_past_the_deadline(monkeypatch):
    # 10 s a step: the threads' steps and five timed ones would take a minute more than the measuring had
    calls = []

    def fake(model, opt, get_batch, n, ctx, device):
        calls.append(get_batch()[0].shape[0])
        return [10.0] * n
    monkeypatch.setattr(search, 'timed_train_steps', fake)
    rate = search.measure_throughput((2, 64), 65, 'cpu', 'float32', 16, 128, threads=0, deadline=time.time() + 5)
    assert calls == [2, 2] and rate == pytest.approx(128 / 5.0)
    calls.clear()  # with the time to spare, the same steps are timed at the rows that fit
    search.measure_throughput((2, 64), 65, 'cpu', 'float32', 16, 128, deadline=time.time() + 1e9)
    assert calls == [2, 2, 1, 1]


def test_measuring_skips_a_neighbour_that_cannot_fit_the_rule_better(monkeypatch):
    # fake rates of 1M tokens/s. Over 1.15 s 3 x 128 (591k) reads 1.86M tokens, 3.16 per parameter against a target
    # of 2.79 (13% over); 4 x 128 (788k), even at the same speed, 2.36 (15% under): only the recipe is measured.
    # Over 0.8 s 3 x 128 is 5% under (2.20 against 2.32) and 3 x 96 (332k) at least 3.92 (68% over)
    measured = []
    monkeypatch.setattr(search, 'measure_throughput', lambda shape, *a, **k: measured.append(shape) or 1e6)
    for seconds in (1.15, 0.8):
        measured.clear()
        rates = search.measure_shapes(65, 'cpu', 'float32', 128, 16, seconds, time.time() + 1e9, log=lambda *a: None)
        assert measured == [(3, 128)] and search.pick_shape(rates, seconds, 'cpu')[0] == (3, 128)
    # where the neighbour could win it is measured: over 3 s 3 x 128 is 83% over the target (8.23 against 4.50) and
    # 4 x 128 at most 37% over (6.15), so 4 x 128 is measured. 4 x 160, even at 4 x 128's speed, would be 13% under
    # (3.93): nearer in ratio, but a larger model's distance counts 3 times (3 x 0.133 against 0.314), so it is not
    measured.clear()
    rates = search.measure_shapes(65, 'cpu', 'float32', 128, 16, 3.0, time.time() + 1e9, log=lambda *a: None)
    assert measured == [(3, 128), (4, 128)] and search.pick_shape(rates, 3.0, 'cpu')[0] == (4, 128)


def test_measuring_a_shape_takes_fewer_rows_when_a_step_is_slow(monkeypatch):
    # fake steps of fixed + rows x per_row seconds, after two untimed ones of 2 rows. Fast ones (a 65-character
    # model) are timed at the full 16 rows, five of them. Where 16 rows would take 4 s (GPT-2's vocabulary, eager, on
    # a 2-core CPU) the timed steps take the 2 rows that fit in 0.75 s until they pass 1.5 s: a full batch's tokens
    # a second within 2%, for 2.6 s of steps where three full ones took 12
    for fixed, per_row, rows, timed in ((0.03, 0.008, 16, 5), (0.01, 0.25, 2, 3)):
        calls = []

        def fake(model, opt, get_batch, n, ctx, device):
            calls.append(get_batch()[0].shape[0])
            return [fixed + per_row * calls[-1]] * n
        monkeypatch.setattr(search, 'timed_train_steps', fake)
        rate = search.measure_throughput((2, 64), 65, 'cpu', 'float32', 16, 128)
        assert calls == [2, 2] + [rows] * timed
        assert rate == pytest.approx(16 * 128 / (fixed + 16 * per_row), rel=0.02 if rows < 16 else 1e-9)
    assert sum(fixed + per_row * r for r in calls) == pytest.approx(2.55)


@pytest.mark.parametrize('shape', [(2, 64), (3, 128)])
def test_the_measured_step_moves_the_weights_as_the_recipes_optimizers_do(shape):
    # the measuring's optimizer step, written without torch.optim, against model.configure_optimizers' Muon and
    # fused AdamW from the same weights and batches: every weight equal after three steps, so its time is theirs
    import torch
    from core.training.optim import BareMuonAdamW
    from model import GPT
    R = search.RECIPE
    torch.manual_seed(0)
    bare, real = GPT(search.model_config(*shape, 65, 32)), GPT(search.model_config(*shape, 65, 32))
    real.load_state_dict(bare.state_dict())
    start = [p.detach().clone() for p in bare.parameters()]
    args = (R['weight_decay'], R['learning_rate'], (R['beta1'], R['beta2']))
    opts = {id(bare): BareMuonAdamW(bare, *args, R['muon_lr'], R['muon_momentum'], R['muon_ns']),
            id(real): real.configure_optimizers(*args, 'cpu', 'muon', R['muon_lr'], R['muon_momentum'], None,
                                                R['muon_ns'])}
    for _ in range(3):
        x = torch.randint(0, 65, (4, 33))
        for model in (bare, real):
            model(x[:, :-1], x[:, 1:])[1].backward()
            opts[id(model)].step()
            opts[id(model)].zero_grad(set_to_none=True)
    assert all(torch.equal(p, q) for p, q in zip(bare.parameters(), real.parameters()))
    assert all(not torch.equal(p, q) for p, q in zip(bare.parameters(), start))  # and every weight moved


def test_measuring_leaves_torchs_compiler_unloaded():
    # torch.optim's first optimizer imports torch._dynamo (about 1 s); plan.py's measuring is inside the budget
    code = ("import sys; from core.training import search; "
            "search.measure_throughput((2, 64), 65, 'cpu', 'float32', 4, 32, steps=2, seconds=0.1); "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.split()[-1] == 'False', out.stderr[-2000:]


def test_every_candidate_is_mup_from_the_recipes_width():
    # at the recipe's width a candidate is the recipe (muP's multipliers all 1); elsewhere muP from that width, so
    # the recipe's rates, and the search's multiples of them, mean the same at every width
    assert search.BASE_WIDTH == 128
    recipe = search.model_config(3, 128, 65, 128)
    assert not recipe.mup and recipe.attn_scale == 0.35 and recipe.attention_scale == 0.35
    wide = search.model_config(4, 192, 65, 128)
    assert wide.mup and wide.mup_base_width == 128 and wide.mup_width_mult == 1.5
    assert wide.attention_scale == pytest.approx(0.35 * 32 / 48)  # 1/head size past the base width
    keys = search.arm_keys((2.0, 8), 3, 128, 64)
    assert keys['mup'] and keys['mup_base_width'] == 128 and keys['n_embd'] == 64 and keys['batch_size'] == 8
    assert keys['muon_lr'] == 2 * search.RECIPE['muon_lr'] and keys['learning_rate'] == 2 * search.RECIPE['learning_rate']
    assert search.arm_keys((1.0, 16), 3, 128, 128)['mup'] is False


def test_the_schedule_takes_a_share_it_fills_exactly():
    # 4 arms from 10 s with 5 s of start-up cost 155 s (above); from 11 s, 4 x 16 + 2 x 27 + 1 x 49 = 167 s
    assert search.schedule(9, 155, overhead=5) == (4, 10.0)
    assert search.schedule(9, 166.9, overhead=5) == (4, 10.0)
    assert search.schedule(9, 167, overhead=5) == (4, 11.0)


def test_successive_halving_picks_the_best_of_the_longest_rung_not_of_every_trial():
    # by hand: at 4 s A 1.0, B 1.1, C 1.5, D 1.6; A and B go on at 8 s, where B (1.2) beats A (1.3). B wins,
    # though A's 4 s trial has the lowest loss of all
    A, B, C, D = (1.0, 16), (2.0, 16), (0.5, 16), (1.0, 32)
    loss = {(A, 4): 1.0, (B, 4): 1.1, (C, 4): 1.5, (D, 4): 1.6, (A, 8): 1.3, (B, 8): 1.2}
    def run(t):
        t.val_loss, t.wall = loss[(t.arm, t.seconds)], t.seconds
        return t
    trials, best = search.successive_halving([A, B, C, D], 4.0, 1e9, time.time(), run, overhead=0)
    assert [(t.arm, t.seconds) for t in trials] == [(A, 4), (B, 4), (C, 4), (D, 4), (A, 8), (B, 8)]
    assert best == B


def test_successive_halving_counts_each_trials_start_up_against_the_share(monkeypatch):
    # a fake clock moved only by the trials, each 4 s of training and 2 s of start-up. By hand, from 0 with 1 s of
    # start-up assumed before the first: trial 1 ends at 6, trial 2 at 12 (started as 6 + 4 + 2 <= share), trial 3
    # would end at 18: started with a share of 18, not with 17 (nor would a rung of 8 s trials be, from 18)
    clock = [0.0]
    monkeypatch.setattr(search, 'time', type('Clock', (), {'time': staticmethod(lambda: clock[0])}))
    def run(t):
        clock[0] += t.seconds + 2
        t.val_loss, t.wall = 1.0 + t.number / 10, t.seconds + 2
        return t
    arms = [(1.0, 16), (2.0, 16), (0.5, 16)]
    for share, n in ((4.5, 0), (5, 1), (17, 2), (18, 3)):
        clock[0] = 0.0
        trials, _ = search.successive_halving(arms, 4.0, share, 0.0, run, overhead=1, log=lambda *a: None)
        assert len(trials) == n, (share, [t.arm for t in trials])
