"""
Config files and --key=value overrides for train.py, sample.py and bench.py.

    python train.py config/train_shakespeare_char.py --batch_size=32 --compile=False

A config file is plain Python run over the script's defaults; an override's value is
parsed with ast.literal_eval and kept as a string when that fails. Unlike nanoGPT this
is strict: an unknown key, a wrong type or a missing file stops with one line that says
what to fix, naming the closest known key.
"""

import ast
import difflib
import math
import os
import sys
import types

from core.errors import UserError, fail

TRUE_WORDS = {'true': True, '1': True, 'yes': True, 'false': False, '0': False, 'no': False}
# keys that hold a path: a leading ~ there means the home folder. A shell expands it in `--out_dir ~/runs` but not in
# `--out_dir=~/runs`, where the run would go into a folder named '~' (which a later `rm -rf ~` would not only remove)
PATH_KEY_ENDS = ('dir', 'dest', 'out', 'file', 'config', 'init_from', 'dataset', 'prompts', 'markdown')


class ConfigError(UserError):
    """a config file or --key=value the script cannot take; the message says which and why."""


def _suggest(key, known):
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(value):
    return {bool: 'a boolean', int: 'an integer', float: 'a number', str: 'a string',
            tuple: 'a tuple', list: 'a list'}.get(type(value), type(value).__name__)


def _big(n):
    # an integer too long to print usefully (or to convert: 10**400 overflows a float)
    try:
        return f"{float(n):.3g}"
    except OverflowError:
        return "a number beyond 1e308"


def _same(value, allowed):
    # True == 1 in Python, so an allowed value matches only a value of its own type
    return any(type(value) is type(a) and value == a for a in allowed)


def coerce(key, value, default, extra=(), from_cli=False):
    """Return value converted to the type of default, or raise ConfigError saying what was expected.
    extra lists values accepted besides the default's type (such as 'auto')."""
    if _same(value, extra):
        return value
    if default is None:
        return value
    expected = type(default)
    if expected is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS:
            return TRUE_WORDS[value.strip().lower()]
    elif expected is int:
        if isinstance(value, float) and value.is_integer():  # --max_iters=1e4
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            # torch and numpy hold integers in 64 bits: a larger one (--seed=10**23) would overflow there
            if not -2 ** 63 <= value < 2 ** 63:
                raise ConfigError(f"config key '{key}' expects an integer that fits in 64 bits, got {_big(value)}")
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:  # an integer beyond a float's range
                raise ConfigError(f"config key '{key}' expects a finite number, got {_big(value)}") from None
            if not math.isfinite(value):
                raise ConfigError(f"config key '{key}' expects a finite number, got {value}")
            return value
        if isinstance(value, str) and value.strip().lower().lstrip('+-') in ('inf', 'infinity', 'nan'):
            raise ConfigError(f"config key '{key}' expects a finite number, got {value!r}")
    elif expected is str:
        if isinstance(value, str) and '\x00' in value:  # no path, name or prompt holds one; os calls would raise
            raise ConfigError(f"config key '{key}' holds a NUL character (\\x00): {value!r}")
        if isinstance(value, str):
            if value.startswith('~') and key.endswith(PATH_KEY_ENDS):
                return os.path.expanduser(value)
            return value
        if from_cli:  # --dataset=123 means the string '123'
            return str(value)
    elif expected in (tuple, list):
        if isinstance(value, (tuple, list)):
            return expected(value)
    elif isinstance(value, expected):
        return value
    allowed = _type_name(default) + ''.join(f" or {e!r}" for e in extra)
    raise ConfigError(f"config key '{key}' expects {allowed}, got {_shown(value)}")


def _shown(value):
    # a config file may set a key to an object of a class of its own, whose __repr__ can raise
    try:
        return repr(value)
    except Exception:  # noqa: B902
        return f"a {type(value).__name__} object (which cannot be shown)"


def describe_choices(allowed):
    """'adamw' or 'muon'; True, False or 'auto'."""
    words = [repr(a) for a in allowed]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def check_choice(key, value, allowed):
    """Raise ConfigError unless value is one of allowed (compared with its type)."""
    if not _same(value, allowed):
        raise ConfigError(f"{key} must be {describe_choices(allowed)}, got {value!r}")
    return value


def parse_cli_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


# config files that were renamed: a user's old path gets the new name instead of a bare "not found"
RENAMED_CONFIGS = {
    'classic_shakespeare_char_cpu.py': 'config/train_shakespeare_char_cpu.py',
    'speedrun2_shakespeare_char_cpu.py': 'config/speedrun_shakespeare_char_cpu.py',
}


def _run_config_file(path, defaults):
    if not os.path.isfile(path):
        new = RENAMED_CONFIGS.get(os.path.basename(path))
        if new and os.path.basename(os.path.dirname(os.path.abspath(path))) == 'config':
            raise ConfigError(f"config file '{path}' was renamed: use {new}")
        if os.path.isdir(path):
            raise ConfigError(f"config file '{path}' is a folder; give a .py file, e.g. one in config/")
        raise ConfigError(f"config file '{path}' not found")
    namespace = dict(defaults)
    namespace['__file__'] = path
    try:
        with open(path, encoding='utf-8-sig') as f:  # an editor's byte order mark is not code (Python's own reading)
            tree = compile(f.read(), path, 'exec', ast.PyCF_ONLY_AST)
        _check_sets_values(tree, path)
        exec(compile(tree, path, 'exec'), namespace)
    except (ConfigError, KeyboardInterrupt):
        raise
    except BaseException as e:  # a config file is user code: report its error as one line, an exit() in it too
        if isinstance(e, SystemExit):  # it would end the script silently, with nothing run and maybe code 0
            raise ConfigError(f"config file {path} called exit({'' if e.code is None else repr(e.code)}); a config "
                              f"file only sets values") from None
        line = getattr(e, 'lineno', None)
        where = f"{path}:{line}" if line else path
        try:
            text = str(e)
        except Exception:  # noqa: B902  (an exception class of the file's own whose __str__ raises)
            text = '(its message cannot be shown)'
        raise ConfigError(f"config file {where} failed: {type(e).__name__}: {text}")
    # only what the file assigned: a key left at its seeded value is the same object, unless a statement of the
    # file binds it (`compile = False` binds the very False the default holds)
    assigned = _bound_names(tree)
    # the modules, functions and classes a file imports or defines for its own use are not settings; bound to a
    # key's name (`max_iters = lambda: 5000`, `def compile(): ...`) they are, and its type check refuses them rather
    # than the default standing in without a word
    return {k: v for k, v in namespace.items()
            if not k.startswith('_') and (k in defaults or not isinstance(v, (types.ModuleType, types.FunctionType,
                                                                                 type)))
            and not (k in defaults and v is defaults[k] and k not in assigned)}


def _check_sets_values(tree, path):
    """YAML's `key: value` is a Python annotation and JSON's {"key": value} an expression: each runs and sets
    nothing, so the file's settings would be ignored in silence."""
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and node.value is None and isinstance(node.target, ast.Name):
            value = ast.unparse(node.annotation)
            raise ConfigError(f"config file {path}:{node.lineno} annotates {node.target.id} without setting it; a "
                              f"config file is Python: write {node.target.id} = {value}")
        if isinstance(node, ast.Expr) and isinstance(node.value, (ast.Dict, ast.Set)):
            raise ConfigError(f"config file {path}:{node.lineno} is a bare {{...}} that sets nothing (JSON?); a config "
                              f"file is Python: write one key = value per line")


def _bound_names(tree):
    """The names a module's own statements bind, not those local to its functions, classes or comprehensions."""
    names, todo = set(), list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp,
                             ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        todo.extend(ast.iter_child_nodes(node))
    return names


def parse(argv, defaults, extra=None, explicit=None, choices=None):
    """Apply config files and --key=value overrides in argv to a copy of defaults and return it.
    extra maps a key to the values it accepts besides its default's type; choices maps a key to the only
    values it accepts (of any type: compile=(True, False, 'auto')); explicit, a set, collects the keys
    that a file or an override set."""
    extra, choices = extra or {}, choices or {}
    extra = {k: tuple(extra.get(k, ())) + tuple(choices.get(k, ())) for k in set(extra) | set(choices)}
    known = list(defaults)
    config = dict(defaults)
    for arg in argv:
        if not arg.startswith('--'):
            for key, value in _run_config_file(arg, config).items():
                if key not in defaults:
                    raise ConfigError(f"unknown config key '{key}' in {arg}{_suggest(key, known)}")
                config[key] = coerce(key, value, defaults[key], extra.get(key, ()))
                if key in choices:
                    check_choice(key, config[key], choices[key])
                if explicit is not None:
                    explicit.add(key)
            continue
        body = arg[2:]
        if '=' not in body:
            key = body
            if key in defaults and isinstance(defaults[key], bool):
                config[key] = True  # a bare --flag turns a boolean on
                if explicit is not None:
                    explicit.add(key)
                continue
            if key in defaults:
                raise ConfigError(f"--{key} needs a value: --{key}=VALUE")
            raise ConfigError(f"unknown config key '{key}' in --{key}{_suggest(key, known)}")
        key, text = body.split('=', 1)  # the value may itself contain '='
        if key not in defaults:
            raise ConfigError(f"unknown config key '{key}' in --{body}{_suggest(key, known)}")
        value = parse_cli_value(text)
        allowed = extra.get(key, ())
        if isinstance(defaults[key], str) and not isinstance(value, str) and \
                not _same(value, allowed):
            value = text
        config[key] = coerce(key, value, defaults[key], allowed, from_cli=True)
        if key in choices:
            check_choice(key, config[key], choices[key])
        if explicit is not None:
            explicit.add(key)
    return config


def help_text(defaults, script):
    lines = [f"usage: python {script} [config_file.py ...] [--key=value ...]", "", "keys and defaults:"]
    lines += [f"  --{k}={v!r}" for k, v in defaults.items()]
    return "\n".join(lines)


def configure(g, keys, extra=None, argv=None, explicit=None, choices=None):
    """Read sys.argv (or argv) over the globals g of a script for the given keys, update g, and
    return the final config as a dict. extra and choices as in parse(). Errors print one line and exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    defaults = {k: g[k] for k in keys}
    if any(a in ('-h', '--help') for a in argv):
        print(help_text(defaults, os.path.basename(g.get('__file__', 'script.py'))))
        sys.exit(0)
    try:
        config = parse(argv, defaults, extra, explicit, choices)
    except ConfigError as e:
        fail(str(e))
    g.update(config)
    return config


def config_keys(g):
    """The names of a script's config globals: plain values defined so far, not starting with '_' and not constants
    in capitals (an imported MAX_TEMPERATURE is not a setting)."""
    return [k for k, v in g.items() if not k.startswith('_') and not k.isupper()
            and isinstance(v, (int, float, bool, str, tuple, list, type(None)))]
