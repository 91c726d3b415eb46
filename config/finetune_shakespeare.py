# Fine-tune GPT-2 (124M) on Tiny Shakespeare in GPT-2 BPE tokens. Needs the GPT-2 weights:
# downloaded from the Hugging Face hub when online, or init_from = 'hf:/path/to/saved/gpt2'.
# python data/shakespeare/prepare.py && python train.py config/finetune_shakespeare.py
# For the larger models set init_from = 'gpt2-xl' and lower batch_size on smaller GPUs.

out_dir = 'out-shakespeare-finetune'
eval_interval = 5
eval_iters = 40
log_interval = 1
always_save_checkpoint = False  # keep only the best

wandb_log = False
wandb_project = 'shakespeare'
wandb_run_name = 'ft-gpt2'

dataset = 'shakespeare'
init_from = 'gpt2'

# 1 x 32 x 1024 = 32,768 tokens per iteration; one epoch of ~300k tokens is ~9 iterations
batch_size = 1
gradient_accumulation_steps = 32
block_size = 1024
max_iters = 20

# fine-tune at a constant small learning rate
learning_rate = 3e-5
decay_lr = False
