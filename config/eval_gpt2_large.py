# Loss and perplexity of the published gpt2-large weights on OpenWebText's val split.
# python train.py config/eval_gpt2_large.py   (add --eval_full=True for the exact loss over the whole split)
init_from = 'gpt2-large'
dataset = 'openwebtext'
batch_size = 8
block_size = 1024
eval_iters = 500  # random batches; eval_full walks the whole split instead
eval_only = True
wandb_log = False
out_dir = 'out-eval-gpt2-large'
