# A small GPT on WikiText-2 (about 2.4M GPT-2 BPE tokens of train), evaluated exactly on the
# whole validation split.
# python data/wikitext2/prepare.py [--data_dir=DIR holding wiki.{train,valid,test}.raw]
# python train.py config/train_wikitext2.py

out_dir = 'out-wikitext2'
dataset = 'wikitext2'
eval_interval = 250
eval_iters = 40
eval_full = True  # the whole val split: true loss and perplexity
log_interval = 10
always_save_checkpoint = False

gradient_accumulation_steps = 1
batch_size = 16
block_size = 256

n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2

learning_rate = 1e-3
max_iters = 5000
lr_decay_iters = 5000
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 200
