# GPT-2 (124M) on OpenWebText, one node of 8 GPUs:
# python data/openwebtext/prepare.py
# torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2.py

wandb_log = True
wandb_project = 'owt'
wandb_run_name = 'gpt2-124M'
out_dir = 'out-gpt2'

dataset = 'openwebtext'
# 12 micro-batch x 1024 tokens x 40 micro-steps (5 per GPU) = 491,520 tokens per step
batch_size = 12
block_size = 1024
gradient_accumulation_steps = 5 * 8

n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = False

# 600k steps is about 300B tokens
max_iters = 600000
lr_decay_iters = 600000
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 2000

eval_interval = 1000
eval_iters = 200
log_interval = 10

weight_decay = 1e-1
