# nanoGPT's published CPU recipe ("classic"), the reference the speedrun is measured against: the baby character
# GPT shrunk to 4 layers of 128 for a laptop, exactly as nanoGPT's README runs it
# (config/train_shakespeare_char.py with --device=cpu --compile=False --eval_iters=20 --log_interval=1
# --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000
# --lr_decay_iters=2000 --dropout=0.0). Every key is spelled out so a change of our defaults cannot move it.
# python data/shakespeare_char/prepare.py && python train.py config/train_shakespeare_char_cpu.py

out_dir = 'out-shakespeare-char-cpu'
eval_interval = 250
eval_iters = 20
log_interval = 1
always_save_checkpoint = False

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 12
block_size = 64

# GPT-2's architecture, without biases as in nanoGPT's train.py
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
bias = False
norm = 'layernorm'
prenorm = True
pos_encoding = 'learned'
mlp = 'gelu'
qk_norm = False
tie_embeddings = True
logit_softcap = 0.0

optimizer = 'adamw'
learning_rate = 1e-3
max_iters = 2000
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.99
grad_clip = 1.0

decay_lr = True
lr_schedule = 'iters'
warmdown_frac = 0.0
warmup_iters = 100
lr_decay_iters = 2000
min_lr = 1e-4

device = 'cpu'
dtype = 'auto'  # bfloat16 autocast where the CPU has it in hardware (AVX512-BF16, AMX), else float32
compile = False
seed = 1337
