import os

import pytest

from configurator import ConfigError, parse
from conftest import assert_one_line_error, run_script

DEFAULTS = dict(learning_rate=6e-4, batch_size=12, compile=False, out_dir='out', betas=(0.9, 0.95), wandb_run_name='x')


def test_overrides_are_typed():
    cfg = parse(['--learning_rate=1', '--batch_size=32', '--compile=true', '--out_dir=runs/a=b'], DEFAULTS)
    assert cfg['learning_rate'] == 1.0 and isinstance(cfg['learning_rate'], float)
    assert cfg['batch_size'] == 32 and cfg['compile'] is True and cfg['out_dir'] == 'runs/a=b'


@pytest.mark.parametrize('text,value', [('True', True), ('true', True), ('1', True), ('False', False),
                                        ('false', False), ('0', False)])
def test_booleans(text, value):
    assert parse([f'--compile={text}'], DEFAULTS)['compile'] is value


def test_string_keys_keep_the_text():
    assert parse(['--out_dir=123'], DEFAULTS)['out_dir'] == '123'
    assert parse(['--wandb_run_name=lr 1e-3'], DEFAULTS)['wandb_run_name'] == 'lr 1e-3'


def test_constants_and_private_names_are_not_config_keys():
    from configurator import config_keys
    assert config_keys({'learning_rate': 1e-3, 'MAX_TEMPERATURE': 1e30, 'SHAPE_KEYS': ('n_layer',), '_k': 1,
                        'n_layer': 12, 'table': {}}) == ['learning_rate', 'n_layer']
    # sample.py imports MAX_TEMPERATURE from model.py: it was a key, and --MAX_TEMPERATURE=-1 was accepted
    r = run_script('sample.py', '--MAX_TEMPERATURE=-1')
    assert_one_line_error(r, "unknown config key 'MAX_TEMPERATURE'")


def test_extra_values_are_accepted():
    assert parse(['--batch_size=auto'], DEFAULTS, extra={'batch_size': ('auto',)})['batch_size'] == 'auto'
    with pytest.raises(ConfigError, match="expects an integer or 'auto'"):
        parse(['--batch_size=big'], DEFAULTS, extra={'batch_size': ('auto',)})


def test_choices_accept_only_their_values(tmp_path):
    defaults = dict(optimizer='adamw', compile='auto')
    choices = dict(optimizer=('adamw', 'muon'), compile=(True, False, 'auto'))
    cfg = parse(['--optimizer=muon', '--compile=False'], defaults, choices=choices)
    assert cfg['optimizer'] == 'muon' and cfg['compile'] is False
    assert parse(['--compile=auto'], defaults, choices=choices)['compile'] == 'auto'
    with pytest.raises(ConfigError, match="^optimizer must be 'adamw' or 'muon', got 'sgd'$"):
        parse(['--optimizer=sgd'], defaults, choices=choices)
    # 1 equals True in Python: a choice matches a value of its own type only
    with pytest.raises(ConfigError, match="^compile must be True, False or 'auto', got '1'$"):
        parse(['--compile=1'], defaults, choices=choices)
    config_file = tmp_path / 'c.py'
    config_file.write_text("optimizer = 'lion'\n")  # a config file goes through the same check
    with pytest.raises(ConfigError, match="optimizer must be 'adamw' or 'muon', got 'lion'"):
        parse([str(config_file)], defaults, choices=choices)


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'lerning_rate' .*did you mean 'learning_rate'"):
        parse(['--lerning_rate=1e-3'], DEFAULTS)


def test_wrong_type_names_the_expected_type():
    with pytest.raises(ConfigError, match="'batch_size' expects an integer"):
        parse(['--batch_size=1.5'], DEFAULTS)
    with pytest.raises(ConfigError, match="'compile' expects a boolean"):
        parse(['--compile=maybe'], DEFAULTS)
    with pytest.raises(ConfigError, match="'learning_rate' expects a number"):
        parse(['--learning_rate=fast'], DEFAULTS)


def test_config_file(tmp_path):
    path = tmp_path / 'c.py'
    path.write_text("import math\nbatch_size = 8\nlearning_rate = 3e-4 * math.sqrt(4)\n_helper = 1\n")
    cfg = parse([str(path), '--batch_size=16'], DEFAULTS)  # later arguments win
    assert cfg['batch_size'] == 16 and abs(cfg['learning_rate'] - 6e-4) < 1e-12
    path.write_text("lerning_rate = 1e-3\n")
    with pytest.raises(ConfigError, match=rf"unknown config key 'lerning_rate' in {path}.*did you mean 'learning_rate'"):
        parse([str(path)], DEFAULTS)
    with pytest.raises(ConfigError, match="config file 'nope.py' not found"):
        parse(['nope.py'], DEFAULTS)
    path.write_text("batch_size = \n")
    with pytest.raises(ConfigError, match='SyntaxError'):
        parse([str(path)], DEFAULTS)


def test_a_yaml_or_json_file_is_refused_rather_than_run_as_python_that_sets_nothing(tmp_path):
    # `batch_size: 8` is an annotation and {"batch_size": 8} an expression: both ran, set nothing, and the
    # run went on with the defaults in silence
    path = tmp_path / 'c.py'
    path.write_text("# from a YAML habit\nbatch_size: 8\nlearning_rate: 1e-3\n")
    with pytest.raises(ConfigError, match=rf"{path}:2 annotates batch_size without setting it.*write batch_size = 8"):
        parse([str(path)], DEFAULTS)
    path.write_text('{"batch_size": 8}\n')
    with pytest.raises(ConfigError, match=rf"{path}:1 is a bare {{...}} that sets nothing"):
        parse([str(path)], DEFAULTS)
    path.write_text('"""a docstring"""\nbatch_size: int = 8\nprint("set")\n')  # Python that sets a value
    assert parse([str(path)], DEFAULTS)['batch_size'] == 8


def test_a_byte_order_mark_is_not_code(tmp_path):
    # an editor's UTF-8 byte order mark: SyntaxError, invalid non-printable character U+FEFF (Python takes it)
    path = tmp_path / 'c.py'
    path.write_bytes('\ufeffbatch_size = 8\n'.encode('utf-8'))
    assert parse([str(path)], DEFAULTS)['batch_size'] == 8


def test_explicit_keys_are_collected(tmp_path):
    path = tmp_path / 'c.py'
    path.write_text("batch_size = 8\n")
    explicit = set()
    parse([str(path), '--compile=True'], DEFAULTS, explicit=explicit)
    assert explicit == {'batch_size', 'compile'}


# the same mistakes through the real scripts: one line, non-zero exit, no traceback

def test_a_nul_character_in_a_string_key_is_one_line(tmp_path):
    # a config file can put one in a path, where every os call raises ValueError ('embedded null byte')
    cfg = tmp_path / 'nul.py'
    cfg.write_text("out_dir = 'runs\\x00one'\n")
    with pytest.raises(ConfigError, match="config key 'out_dir' holds a NUL character"):
        parse([str(cfg)], {'out_dir': 'out'})
    r = run_script('train.py', str(cfg))
    assert_one_line_error(r, 'NUL character')


def test_train_unknown_key_in_file(tmp_path):
    path = tmp_path / 'bad.py'
    path.write_text("lerning_rate = 1e-3\n")
    line = assert_one_line_error(run_script('train.py', str(path)), 'lerning_rate', str(path), "'learning_rate'")
    assert 'did you mean' in line


@pytest.mark.parametrize('script', ['train.py', 'sample.py'])
def test_scripts_reject_unknown_override(script):
    assert_one_line_error(run_script(script, '--max_new_tokenz=5' if script == 'sample.py' else '--batch_sise=5'),
                          'unknown config key', 'did you mean')


def test_train_wrong_type_and_missing_file():
    assert_one_line_error(run_script('train.py', '--batch_size=lots'), "'batch_size' expects an integer")
    assert_one_line_error(run_script('train.py', 'config/does_not_exist.py'), 'not found')


def test_train_missing_dataset_names_the_prepare_command(tmp_path):
    line = assert_one_line_error(run_script('train.py', '--dataset=no_such_dataset', f'--out_dir={tmp_path}'),
                                 "dataset 'no_such_dataset'")
    assert 'prepare.py' in line


def test_train_missing_checkpoint(tmp_path, char_data):
    assert_one_line_error(run_script('train.py', f'--dataset={char_data}', f'--out_dir={tmp_path}',
                                     '--init_from=resume'), 'no checkpoint', str(tmp_path))


def test_every_config_file_parses():
    """Each shipped config sets only known keys with the right types."""
    import configurator
    from model import CONFIG_DEFAULTS
    defaults = {'CONFIG_DEFAULTS': CONFIG_DEFAULTS}  # the block adds every GPTConfig field from it
    with open(os.path.join(os.path.dirname(configurator.__file__), 'train.py')) as f:
        src = f.read()
    # the config block of train.py: the globals between the imports and install_excepthook()
    block = src[src.index('# I/O'):src.index('install_excepthook()')]
    exec(block, defaults)
    defaults = {k: v for k, v in defaults.items() if not k.startswith('_') and k != 'CONFIG_DEFAULTS'}
    config_dir = os.path.join(os.path.dirname(configurator.__file__), 'config')
    for name in sorted(os.listdir(config_dir)):
        if name.endswith('.py'):
            parse([os.path.join(config_dir, name)], defaults, extra={'compile': (True, False), 'batch_size': ('auto',)})


def test_numbers_a_key_cannot_mean_are_refused():
    # 2 is no boolean (only 0 and 1 read as False and True); 1e999 is a float's infinity and nan is no number
    with pytest.raises(ConfigError, match="'compile' expects a boolean, got 2"):
        parse(['--compile=2'], DEFAULTS)
    with pytest.raises(ConfigError, match="'compile' expects a boolean, got -1"):
        parse(['--compile=-1'], DEFAULTS)
    for text in ('1e999', '-1e999'):
        with pytest.raises(ConfigError, match="'learning_rate' expects a finite number"):
            parse([f'--learning_rate={text}'], DEFAULTS)


def test_a_config_file_gets_the_same_number_checks(tmp_path):
    path = tmp_path / 'c.py'
    path.write_text("learning_rate = float('nan')\n")
    with pytest.raises(ConfigError, match="'learning_rate' expects a finite number, got nan"):
        parse([str(path)], DEFAULTS)
    path.write_text("compile = 3\n")
    with pytest.raises(ConfigError, match="'compile' expects a boolean, got 3"):
        parse([str(path)], DEFAULTS)


def test_a_config_file_that_sets_a_key_to_its_default_has_set_it(tmp_path):
    # what a file sets is explicit, so a resumed run keeps it over the checkpoint's value, even when it equals
    # the default: False, 12 and 'out' are the very objects the defaults hold
    path = tmp_path / 'c.py'
    path.write_text("batch_size = 12\ncompile = False\nout_dir = 'out'\n"
                    "def helper(learning_rate=1):\n    betas = (0, 0)\n    return betas\n"
                    "_names = [wandb_run_name for wandb_run_name in 'ab']\n")
    explicit = set()
    cfg = parse([str(path)], DEFAULTS, explicit=explicit)
    assert explicit == {'batch_size', 'compile', 'out_dir'}  # a function's or comprehension's own names are not
    assert cfg['batch_size'] == 12 and cfg['compile'] is False and cfg['wandb_run_name'] == 'x'


def test_home_in_a_path_key_is_expanded(tmp_path, monkeypatch):
    # `--out_dir=~/runs` reaches the script unexpanded (the shell expands ~ only at a word's start): the run went into
    # a folder named '~' in the current one
    monkeypatch.setenv('HOME', str(tmp_path))
    defaults = {'out_dir': 'out', 'dest': '', 'init_from': 'scratch', 'start': '\n', 'speedrun_config': 'c.py',
                'dataset': 'shakespeare_char', 'prompts': '', 'markdown': ''}
    cfg = parse(['--out_dir=~/runs', '--dest=~', '--init_from=~/run', '--start=~/not a path',
                 '--speedrun_config=~/r.py', '--dataset=~/data/mine', '--prompts=~/p.txt', '--markdown=~/t.md'], defaults)
    assert cfg['out_dir'] == str(tmp_path / 'runs') and cfg['dest'] == str(tmp_path)
    # a dataset may be a path too (it was looked for as data/~/data/mine), and eval.py's prompts and markdown are files
    assert [cfg[k] for k in ('dataset', 'prompts', 'markdown')] == [str(tmp_path / p) for p in ('data/mine', 'p.txt', 't.md')]
    assert cfg['init_from'] == str(tmp_path / 'run') and cfg['speedrun_config'] == str(tmp_path / 'r.py')
    assert cfg['start'] == '~/not a path'  # a prompt is text
    file = tmp_path / 'c.py'
    file.write_text("out_dir = '~/from_file'\n")
    assert parse([str(file)], defaults)['out_dir'] == str(tmp_path / 'from_file')
