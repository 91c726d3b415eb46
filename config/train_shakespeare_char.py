# nanoGPT's baby GPT on characters: about 10.7M parameters, a few minutes on one GPU.
# python data/shakespeare_char/prepare.py && python train.py config/train_shakespeare_char.py

out_dir = 'out-shakespeare-char'
eval_interval = 250  # it overfits: evaluate often
eval_iters = 200
log_interval = 10
always_save_checkpoint = False  # only when val improves

wandb_log = False
wandb_project = 'shakespeare-char'
wandb_run_name = 'mini-gpt'

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 64
block_size = 256  # context of up to 256 previous characters

n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2

learning_rate = 1e-3  # a small network can take a larger rate
max_iters = 5000
lr_decay_iters = 5000  # usually max_iters
min_lr = 1e-4  # learning_rate / 10
beta2 = 0.99  # a little larger because there are few tokens per iteration
warmup_iters = 100
