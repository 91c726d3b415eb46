# A small GPT trained from scratch on Tiny Shakespeare in GPT-2 BPE tokens (about 340k).
# Most of its parameters are the 50k-token embedding; for a model that is mostly network,
# see the trained 10k-token BPE in data/shakespeare/prepare.py.
# python data/shakespeare/prepare.py && python train.py config/train_shakespeare.py --batch_size=20

out_dir = 'out-shakespeare'
eval_interval = 100
eval_iters = 20
log_interval = 10
always_save_checkpoint = False

dataset = 'shakespeare'
gradient_accumulation_steps = 1
batch_size = 12
block_size = 128

n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.1

learning_rate = 1e-3
max_iters = 600
lr_decay_iters = 600
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 50
