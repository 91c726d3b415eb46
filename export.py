"""
Hand a trained model to the Hugging Face world.

    python export.py --out_dir=out-shakespeare --to=hf_folder            # writes out-shakespeare/hf
    python export.py --out_dir=out --dest=my-gpt2
    # then, anywhere:  transformers.GPT2LMHeadModel.from_pretrained('my-gpt2')

Reads out_dir/best.pt (the best by val loss) or else out_dir/ckpt.pt, and writes a GPT-2
folder: config.json, model.safetensors and, when the data used GPT-2's BPE (or a BPE trained
here), the tokenizer files. vocab_size in config.json is the embedding's row count, padding
included (50304 for GPT-2 data padded to a multiple of 64); the extra rows are never produced
by the tokenizer. Only GPT-2's architecture can be exported: a checkpoint with other switches
(rmsnorm, rope, swiglu, ...) is refused. bias=False is written as zero biases.
"""

import os

from core import checkpoint
from core import hf
from configurator import config_keys, configure
from core.errors import UserError, install_excepthook
from model import GPT, GPTConfig

out_dir = 'out'  # the training run to export
to = 'hf_folder'  # the only format so far
dest = ''  # the folder to write; '' means out_dir/hf
# -----------------------------------------------------------------------------
install_excepthook()
configure(globals(), config_keys(globals()))
# -----------------------------------------------------------------------------

if to != 'hf_folder':
    raise UserError(f"--to={to!r} is not known; use --to=hf_folder")
path = os.path.join(out_dir, 'best.pt')
if not os.path.exists(path):
    path = os.path.join(out_dir, 'ckpt.pt')
ckpt = checkpoint.load(path)
args = ckpt['model_args']
bad = hf.unsupported_switches(args)
if bad:
    raise UserError(f"{path} uses switches GPT-2 lacks: {', '.join(bad)}; only GPT-2-architecture models export")
try:
    model = GPT(GPTConfig(**args))
except (TypeError, ValueError) as e:
    raise UserError(f"{path} has model_args this model.py cannot build ({e})")
model.load_state_dict(ckpt['model'])
tokenizer = ckpt.get('tokenizer')
folder = dest or os.path.join(out_dir, 'hf')
written = hf.save_hf_folder(model, folder, tokenizer)
kind = hf.tokenizer_kind(tokenizer)
print(f"exported {path} (iteration {ckpt.get('iter_num', '?')}, vocab {model.config.vocab_size}, "
      f"block {model.config.block_size}) to {folder}: {', '.join(written)}")
if not any(name.startswith(('vocab', 'tokenizer.json')) for name in written):
    print(f"note: no Hugging Face tokenizer files for a {kind or 'missing'} tokenizer; encode text with this repo's "
          f"tokenizer.py (the ids are the same)")
