# The CPU speedrun, its current record recipe (rounds two and three; docs/results.md has every round):
# nanoGPT's CPU recipe (config/train_shakespeare_char_cpu.py) is the reference, the first round's recipe
# (config/speedrun_round1_shakespeare_char_cpu.py) the starting point. What changed, and why
# (each measured at equal time on 2 cores, see the results log's round-two table):
# - bf16 autocast on CPUs with it in hardware (dtype='auto'): the matmuls run at twice their fp32 speed;
#   attention over these 128-token windows is written out as bf16 matmuls with an fp32 softmax (torch's CPU
#   kernel is slow in bf16), 7% off a step; the same loss per step
# - torch.compile (compile=True): fuses the casts, norms, rope and relu^2 around the matmuls, 1.3x per step;
#   it compiles before the clock starts (about 45 s on 2 cores, logged), as modded-nanogpt times its runs
# - 3 layers of 128 instead of 4: at this budget the model sees ~1.5M tokens, far fewer than its size could
#   use, so a step 27% cheaper (more tokens) beats a layer more
# - Muon with the Polar Express schedule (in bf16, same-shaped matrices as one stack) and a momentum of 0.9;
#   a logit soft cap of 15
# - round three: weight decay 0.03 instead of 0.1 (-0.017 at equal steps, three seeds) and an attention scale
#   of 0.35 instead of 1/sqrt(32) (-0.009, three seeds): with qk_norm the scale bounds how sharp attention gets
# Tried and left out (no gain at equal time here): value embeddings, U-net skips, zero-initialized projections,
# batch 8 or 24, block 256, 4 layers of 160, 6 layers, a higher Muon or AdamW learning rate, a longer warmdown;
# in round three learned q/k norm gains, attention scales 0.25 and 0.5, AdamW beta1 0.8 or beta2 0.95, a higher
# embedding learning rate, soft cap 30, no gradient clipping (the results log's round-three table).
# python data/shakespeare_char/prepare.py && python train.py config/speedrun_shakespeare_char_cpu.py
# python studies/speedrun.py  # against the classic recipe, same machine, same scoring

out_dir = 'out-speedrun-shakespeare-char-cpu'
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

n_layer = 3
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
logit_softcap = 15.0  # 15 * tanh(logits / 15): a little lower loss here (10 was worse)
attn_scale = 0.35  # with qk_norm the logits are at most head size x scale: 1/sqrt(32) = 0.18 keeps them too flat
value_embed = False
unet = False
zero_init_proj = False

optimizer = 'muon'
muon_lr = 0.04
muon_momentum = 0.9  # 0.95 (round one) and 0.85 both ended higher at this step count
muon_ns = 'polar_express'
learning_rate = 3e-3  # AdamW, for the embeddings, head, gains and biases
embed_lr = 0.0  # same as learning_rate
weight_decay = 0.03  # 0.1 (round one) ended 0.017 higher, three seeds
beta1 = 0.9
beta2 = 0.99
grad_clip = 1.0

max_seconds = 27.0  # speedrun.py sets it from the classic recipe's time on this machine
max_iters = 1000000  # the clock ends the run
decay_lr = True
lr_schedule = 'time'
warmup_iters = 20
warmdown_frac = 0.5
min_lr = 0.0

device = 'cpu'
dtype = 'auto'  # bfloat16 autocast where the CPU has it in hardware (AVX512-BF16, AMX), else float32
compile = True
seed = 1337
