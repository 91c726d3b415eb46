# The CPU speedrun's first round (docs/results.md; the current recipe is config/speedrun_shakespeare_char_cpu.py):
# the same 4 layers of 128 as nanoGPT's CPU recipe (config/train_shakespeare_char_cpu.py), trained for a
# wall-clock budget instead of an iteration count. What changed, and why:
# - Muon on the hidden matrices (a higher lr, orthogonalized updates): the biggest gain per token
# - rotary positions, ReLU^2 MLP, QK-norm: lower loss per token at about the same cost per token
# - an untied head: the same loss here, and a little cheaper on CPU (no tied-gradient sum)
# - 16 x 128 tokens per step instead of 12 x 64: two cores work better on larger matrices
# - the learning rate follows the clock (lr_schedule='time'): held at its peak, then down to 0
#   over the last half of max_seconds, so the run is done annealing exactly when time is up
# LayerNorm stays: RMSNorm gave no lower loss here and its CPU kernel is slower.
# python data/shakespeare_char/prepare.py && python train.py config/speedrun_round1_shakespeare_char_cpu.py
# python studies/speedrun.py --speedrun_config=config/speedrun_round1_shakespeare_char_cpu.py  # against the classic recipe, same machine, same scoring

out_dir = 'out-speedrun-round1-shakespeare-char-cpu'
eval_interval = 50
eval_iters = 20
log_interval = 10
always_save_checkpoint = False
eval_full = True  # scored on the whole val split
timed_eval = False  # evaluations do not eat into the training budget

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 16
block_size = 128

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
bias = False
norm = 'layernorm'
prenorm = True
pos_encoding = 'rope'
mlp = 'relu2'
qk_norm = True
tie_embeddings = False
logit_softcap = 0.0

optimizer = 'muon'
muon_lr = 0.04
muon_momentum = 0.95
learning_rate = 3e-3  # AdamW, for the embeddings, head, gains and biases
embed_lr = 0.0  # same as learning_rate
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.99
grad_clip = 1.0

max_seconds = 28.0  # speedrun.py sets it from the classic recipe's time on this machine
max_iters = 1000000  # the clock ends the run
decay_lr = True
lr_schedule = 'time'
warmup_iters = 20
warmdown_frac = 0.5
min_lr = 0.0

device = 'cpu'
dtype = 'float32'
compile = False
seed = 1337
