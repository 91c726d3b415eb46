"""More malformed input that once ended in a traceback or a crash instead of one error line: a thread count
beyond the machine, hand-edited metrics.jsonl records, and plan.py's output paths and budget."""

import os

import pytest

from conftest import FUZZ_TINY, ONE_THREAD, assert_one_error_line, run_inprocess, run_script

TINY = FUZZ_TINY


@pytest.mark.parametrize('script', ['train.py', 'sample.py', 'serve.py', 'bench.py', 'studies/bench_generate.py'])
def test_threads_beyond_the_machine_are_refused(script, tiny_run, char_data, tmp_path):
    # torch started OpenMP's threads and the process died of a segfault, with no message at all; in a fresh
    # interpreter, so that a crash fails this test instead of ending the test run
    args = {'train.py': [f'--dataset={char_data}', f'--out_dir={tmp_path / "out"}', *TINY, '--max_iters=1'],
            'sample.py': [f'--out_dir={tiny_run}', '--device=cpu', '--max_new_tokens=2', '--num_samples=1'],
            'serve.py': [f'--out_dir={tiny_run}', '--device=cpu', '--port=0'],
            'bench.py': ['--device=cpu', '--n_layer=1', '--n_head=2', '--n_embd=16', '--block_size=16',
                         '--vocab_size=64', '--batch_size=1', '--iters=1', '--compile=False'],
            'studies/bench_generate.py': ['--n_layer=1', '--n_head=2', '--n_embd=16', '--tokens=2',
                                          '--batch=1']}[script]
    r = run_script(script, *args, '--threads=100000', env=ONE_THREAD, timeout=120)
    assert_one_error_line(r.returncode, r.stderr, 'threads must be', script)


HAND_EDITED = {
    'iter as text': '{"iter": "5", "val_loss": 1.0}\n',  # was TypeError: '<' between str and int
    'config not a dict': '{"iter": 0, "kind": "start", "config": [1]}\n',  # was AttributeError
    'tokens not a number': '{"iter": 3, "val_loss": 0.9, "tokens": [1]}\n',
    'nested too deep': '[' * 100_000 + '\n',
}


@pytest.mark.parametrize('case', sorted(HAND_EDITED))
def test_plot_skips_hand_edited_fields(case, tmp_path):
    lines = HAND_EDITED[case] + '{"iter": 6, "val_loss": 0.9}\n{"iter": 7, "val_loss": 0.8}\n'
    (tmp_path / 'metrics.jsonl').write_text(lines)
    code, out, err = run_inprocess('plot.py', str(tmp_path), f'--out={tmp_path / "loss.png"}')
    assert code == 0 and 'Traceback' not in err, (case, err)
    assert os.path.getsize(tmp_path / 'loss.png') > 0


@pytest.mark.parametrize('health', ['{"nolayer": 1.0}', '[1, 2]', '"x"'])
def test_plot_health_of_another_shape(health, tmp_path):
    # a health entry without a '/' was IndexError, a health that is not a dict AttributeError
    (tmp_path / 'metrics.jsonl').write_text(f'{{"iter": 1, "val_loss": 0.9, "health": {health}}}\n')
    code, _, err = run_inprocess('plot.py', str(tmp_path), f'--out={tmp_path / "loss.png"}', '--health=True')
    assert_one_error_line(code, err, 'no health metrics', health)


def plan_cases(tmp):
    a_file, folder = os.path.join(tmp, 'a_file'), os.path.join(tmp, 'folder')
    open(a_file, 'w').close()
    os.makedirs(folder, exist_ok=True)
    ok = os.path.join(tmp, 'plan.py')
    return {
        # each was an OSError traceback when the config was written, after the measuring and the search
        'out is a folder': ([f'--out={folder}', '--overwrite=True'], 'is a folder'),
        'out under a file': ([f'--out={os.path.join(a_file, "plan.py")}'], 'is a file'),
        'work_dir is a file': ([f'--out={ok}', f'--work_dir={a_file}'], 'is a file'),
        # a budget of inf seconds wrote `max_seconds = inf`, a config train.py cannot read
        'minutes beyond a float': ([f'--out={ok}', '--minutes=1e308'], 'minutes'),
        # was taken as a trial's cost
        'negative trial_overhead': ([f'--out={ok}', '--trial_overhead=-5'], 'trial_overhead'),
    }


@pytest.mark.parametrize('case', ['out is a folder', 'out under a file', 'work_dir is a file',
                                  'minutes beyond a float', 'negative trial_overhead'])
def test_plan_checks_its_outputs_before_measuring(case, char_data, tmp_path):
    args, fragment = plan_cases(str(tmp_path))[case]
    code, _, err = run_inprocess('plan.py', f'--dataset={char_data}', '--device=cpu', '--minutes=1',
                                 '--search_share=0', *args)
    assert_one_error_line(code, err, fragment, case)
    assert not os.path.exists(tmp_path / 'plan.py')


DAMAGE = {
    # each was a traceback in whichever script first read the field
    'best_val_loss as text': (lambda c: c.update(best_val_loss='low'), 'best_val_loss'),  # ValueError in a format
    'dataset a number': (lambda c: (c.pop('tokenizer'), c.update(dataset=5)), 'dataset'),  # TypeError
    'lora not a dict': (lambda c: c.update(lora=True), 'lora'),  # TypeError: bool is not subscriptable
    'lora without its base': (lambda c: c.update(lora={'rank': 2}), 'lora base'),  # KeyError: 'base'
    'a weight not a tensor': (lambda c: c['model'].update({'lm_head.weight': 5, 'transformer.wte.weight': 5}),
                              'not a tensor'),  # AttributeError: no attribute 'shape'
    'config a list': (lambda c: c.update(config=[1]), 'config'),  # AttributeError on resume; sampled silently
    # NotImplementedError "Cannot copy out of meta tensor" inside load_state_dict
    'weights on the meta device': (lambda c: c.update(model={k: v.to('meta') for k, v in c['model'].items()}),
                                   'meta device'),
    # GPTConfig's default of 12 layers stood in, and 60-odd weights were listed as missing
    'model_args without n_layer': (lambda c: c['model_args'].pop('n_layer'), 'lack n_layer'),
    # a diverged run's weights: RuntimeError in torch.multinomial, or NaN losses and a greedy sample of token 0
    'NaN weights': (lambda c: [v.fill_(float('nan')) for v in c['model'].values() if v.is_floating_point()], 'NaN'),
}


@pytest.mark.parametrize('case', sorted(DAMAGE))
def test_a_damaged_checkpoint_is_named_in_one_line(case, tiny_run, tmp_path):
    import torch
    damage, fragment = DAMAGE[case]
    state = torch.load(os.path.join(tiny_run, 'ckpt.pt'), weights_only=True)
    damage(state)
    torch.save(state, tmp_path / 'ckpt.pt')
    code, _, err = run_inprocess('sample.py', f'--out_dir={tmp_path}', '--device=cpu', '--max_new_tokens=2',
                                 '--num_samples=1')
    assert_one_error_line(code, err, fragment, case)
    if case == 'config a list':
        code, _, err = run_inprocess('train.py', f'--out_dir={tmp_path}', '--init_from=resume', '--device=cpu',
                                     '--compile=False')
        assert_one_error_line(code, err, fragment, case)


RESUME_DAMAGE = {
    # each was a traceback on --init_from=resume (a name that is not text: in every script that loads it)
    'rng none': (lambda c: c.update(rng=None), 'has no rng'),  # TypeError: not subscriptable
    'rng of other parts': (lambda c: c.update(rng={'python': 1, 'numpy': 'x', 'torch': 5}), 'random state'),
    'data_rng text': (lambda c: c.update(data_rng='x'), 'data_rng'),  # TypeError: must be a torch.ByteTensor
    'data_rng floats': (lambda c: c.update(data_rng=__import__('torch').zeros(3)), 'data_rng'),
    'optimizer text': (lambda c: c.update(optimizer='x'), 'optimizer'),  # AttributeError: no attribute 'copy'
    'fingerprint text': (lambda c: c.update(dataset_fingerprint='x'), 'dataset_fingerprint'),  # no attribute 'get'
    'a weight name a number': (lambda c: c['model'].update({5: __import__('torch').zeros(1)}), 'name 5'),
}


@pytest.mark.parametrize('case', sorted(RESUME_DAMAGE))
def test_a_damaged_checkpoint_resumes_in_one_line(case, tiny_run, char_data, tmp_path):
    import torch
    damage, fragment = RESUME_DAMAGE[case]
    state = torch.load(os.path.join(tiny_run, 'ckpt.pt'), weights_only=True)
    damage(state)
    torch.save(state, tmp_path / 'ckpt.pt')
    code, _, err = run_inprocess('train.py', f'--out_dir={tmp_path}', '--init_from=resume', '--device=cpu',
                                 '--compile=False', '--max_iters=2', f'--dataset={char_data}')
    assert_one_error_line(code, err, fragment, case)


def test_a_damaged_char_tokenizer_is_refused_by_the_gguf_export_as_by_the_hf_one(tiny_run, tmp_path):
    # GGUF: TypeError (len of an int); repeated characters were exported, where the HF export refuses them
    import torch
    state = torch.load(os.path.join(tiny_run, 'ckpt.pt'), weights_only=True)
    for chars, fragment in ((5, "'chars'"), (['a', 'a', 'b'], 'repeated')):
        state['tokenizer'] = {'kind': 'char', 'chars': chars}
        torch.save(state, tmp_path / 'ckpt.pt')
        for fmt in ('gguf', 'hf'):
            code, _, err = run_inprocess('export.py', f'--out_dir={tmp_path}', f'--format={fmt}',
                                         f'--dest={tmp_path / ("m." + fmt)}')
            assert_one_error_line(code, err, fragment, (chars, fmt))
            assert not os.path.exists(tmp_path / ('m.' + fmt))


@pytest.mark.parametrize('args', [['--memory_budget_gb=1e-6'], ['--batch_size=1000000000']])
def test_a_batch_far_beyond_memory_stops_before_the_first_step(args, char_data, tmp_path):
    # --batch_size=1000000000 (a typo of zeros) grew until the system killed the process, minutes later and with no
    # message, after pushing the machine into swap; a CPU allocation that fails outright was a RuntimeError
    code, _, err = run_inprocess('train.py', f'--dataset={char_data}', f'--out_dir={tmp_path}', *TINY, '--max_iters=1',
                                 *args)
    assert_one_error_line(code, err, 'would run out of memory', args)
    assert '--batch_size=' in err and 'estimated peak' in err
