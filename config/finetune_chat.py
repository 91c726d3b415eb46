# Chat fine-tuning (SFT) of GPT-2 on conversations: the loss is on the assistant's turns only, each
# conversation is its own document in a packed window (doc_aware), and with lora_rank > 0 only small
# adapters train. The example data are dialogues drawn from Tiny Shakespeare:
# python data/shakespeare_chat/prepare.py && python train.py config/finetune_chat.py
# your own: python data/prepare.py --input=chats.jsonl --format=chat --name=mychat
#           python train.py config/finetune_chat.py --dataset=mychat
# then: python sample.py --out_dir=out-chat --interactive=True

out_dir = 'out-chat'
eval_interval = 20
eval_iters = 20
log_interval = 1
always_save_checkpoint = False  # keep only the best

dataset = 'shakespeare_chat'
init_from = 'gpt2'
doc_aware = True

# LoRA on attention and MLP; --lora_rank=0 fine-tunes every weight instead (then lower learning_rate to ~3e-5, min_lr to ~3e-6)
lora_rank = 8
lora_alpha = 16.0
lora_targets = 'attn,mlp'
merge_lora = True  # out-chat/merged.pt: plain weights for tools that do not know LoRA

# 8 x 2 x 256 = 4,096 tokens per iteration; the 400 dialogues are ~50k tokens, so ~12 iterations an epoch
batch_size = 8
gradient_accumulation_steps = 2
block_size = 256
max_iters = 120
dropout = 0.0

learning_rate = 1e-3
weight_decay = 0.0
warmup_iters = 10
decay_lr = True
lr_decay_iters = 120
min_lr = 1e-4
