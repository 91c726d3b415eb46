"""
Take a trained model to Hugging Face or llama.cpp.

    python export.py                                                  # the newest run under this folder, to <run>/hf
    python export.py --out_dir=out-shakespeare-char                  # writes out-shakespeare-char/hf
    python export.py --out_dir=out --dest=my-model                    # any switch combination
    python export.py --out_dir=out --format=gguf --dest=model.gguf   # for llama.cpp / ollama (GPT-2 or Llama shapes)
    # then: AutoModelForCausalLM.from_pretrained('my-model') and AutoTokenizer.from_pretrained('my-model')

Reads out_dir/best.pt (the best by val loss) or else out_dir/ckpt.pt (--ckpt=latest: the other way
round); out_dir may also be a .pt file, ours or one karpathy/nanoGPT wrote. A Hugging Face folder
takes the most widely read form that computes exactly our logits: GPT-2's architecture as GPT-2,
RMSNorm + rotary + SwiGLU as Llama, anything else as a folder with its own modeling file
(from_pretrained(..., trust_remote_code=True)). The tokenizer goes with it for every kind (GPT-2
BPE, a BPE trained here, characters). vocab_size is the embedding's row count, padding included;
the extra rows are never produced by the tokenizer.

A --dest that exists and holds anything is refused unless --force; with --force only the files
export writes are replaced and everything else in the folder stays. Nothing is half-written: the
export goes to a temporary folder or file that is renamed into place.
"""

import os

import torch

from core import fileio
from core.training import checkpoint
from core.interop import hf
from configurator import config_keys, configure
from core.errors import UserError, install_excepthook

out_dir = ''  # the run folder (or a .pt file) to export; empty: the most recently written run under this folder
ckpt = 'best'  # 'best' (lowest val loss), 'latest', or a step kept with keep_checkpoints
format = 'hf'  # 'hf' (a folder for transformers) or 'gguf' (one file for llama.cpp)
to = ''  # older name of format: 'hf_folder'
dest = ''  # the folder (hf) or file (gguf) to write; '' means out_dir/hf or out_dir/model-<dtype>.gguf
dtype = 'float32'  # hf: float32, float16, bfloat16; gguf: float32, float16, q8_0, q4_0
force = False  # replace the files export writes in an existing --dest (other files there stay)
dataset = ''  # a checkpoint without a tokenizer (nanoGPT's): the data folder holding its meta.pkl or meta.json
# -----------------------------------------------------------------------------
install_excepthook()
configure(globals(), config_keys(globals()))
# -----------------------------------------------------------------------------

if to:
    if to not in ('hf_folder', 'hf', 'gguf'):
        raise UserError(f"--to={to!r} is not known; use --format=hf or --format=gguf")
    format = 'hf' if to == 'hf_folder' else to
DTYPES = {'hf': ('float32', 'float16', 'bfloat16'), 'gguf': ('float32', 'float16', 'q8_0', 'q4_0')}
if format not in DTYPES:
    raise UserError(f"--format={format!r} is not known; use --format=hf (a Hugging Face folder) or --format=gguf")
dtype = {'f32': 'float32', 'fp32': 'float32', 'f16': 'float16', 'fp16': 'float16', 'bf16': 'bfloat16'}.get(dtype, dtype)
if dtype not in DTYPES[format]:
    raise UserError(f"--dtype={dtype!r} is not one of {', '.join(DTYPES[format])} for --format={format}")

if not out_dir:
    from core.inference.engine import latest_run
    out_dir = latest_run()
    print(f"using {out_dir} (the most recently written run; pass --out_dir to choose)")
path = checkpoint.resolve(out_dir, ckpt)
# a run's or a dataset's files are never an export's destination, --force or not: the GGUF would replace the weights
# it came from, or the tokens they were trained on
owner = dest and os.path.isfile(dest) and (fileio.owned(dest) or os.path.samefile(dest, path) and 'a checkpoint')
if owner:
    raise UserError(f"--dest={dest} is {owner}, which an export never replaces; choose another --dest")
state = checkpoint.load(path)
model = checkpoint.build_model(state, path)
model.eval()
tokenizer, tokenizer_from = checkpoint.tokenizer_state(state, path, dataset)
run_dir = out_dir if os.path.isdir(out_dir) else os.path.dirname(os.path.abspath(out_dir))

if format == 'gguf':
    from core.interop import gguf as gguf_export
    target = dest or os.path.join(run_dir, f"model-{dtype}.gguf")
    arch, note = gguf_export.save_gguf(model, target, tokenizer, dtype, force)
    written = f"a {arch} GGUF ({dtype})"
    if note:
        print(f"note: {note}")
    print("note: llama.cpp keeps its KV cache in f16 unless told --cache-type-k f32 --cache-type-v f32"
          + (", and its CPU GELU reads an f16 table" if arch == 'gpt2' else '')
          + ": its logits move by about 1e-3 from ours for that alone")
    rows = gguf_export.gguf_context(model.config, arch)
    if arch == 'gpt2' and rows != 1024:
        print(f"note: transformers' GGUF reader gives GPT-2 1024 positions whatever the file says; load it with "
              f"from_pretrained(folder, gguf_file=..., n_positions={rows})")
    if rows != model.config.block_size:
        print(f"note: the position table is padded from block_size {model.config.block_size} to {rows} rows (llama.cpp "
              f"rounds its context up to a multiple of 256) with copies of the last one: text past "
              f"{model.config.block_size} tokens is beyond what the model was trained on")
else:
    target = dest or os.path.join(run_dir, 'hf')
    kind, files, others = hf.save_hf_folder(model, target, tokenizer, force, getattr(torch, dtype))
    written = f"{', '.join(files)} ({'GPT2LMHeadModel' if kind == 'gpt2' else 'LlamaForCausalLM' if kind == 'llama' else 'its own modeling file: load with trust_remote_code=True'})"
    # what to paste: remote code only for the kind with its own modeling file, whose config lives in that file
    # (transformers 5 reads a folder's config before its tokenizer, so the tokenizer line says it too)
    trust = ', trust_remote_code=True' if kind == 'custom' else ''
    load = (f"from transformers import AutoModelForCausalLM, AutoTokenizer\n"
            f"model = AutoModelForCausalLM.from_pretrained({os.path.abspath(target)!r}{trust})\n"
            f"tokenizer = AutoTokenizer.from_pretrained({os.path.abspath(target)!r}{trust})" if tokenizer else None)
    stale = [n for n in others if n in hf.EXPORT_FILES]
    if stale:
        print(f"note: {', '.join(stale)} in {target} were left as they were (this export does not write them); "
              f"delete them if an earlier export wrote them")
print(f"exported {path} (iteration {state.get('iter_num', '?')}, vocab {model.config.vocab_size}, "
      f"block {model.config.block_size}, tokenizer from {tokenizer_from}) to {target}: {written}")
if format == 'hf' and load:
    print(f"load it in Python with:\n{load}")
