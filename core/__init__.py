"""Code the scripts share: nothing here is run directly.

checkpoint (atomic, weights-only I/O), errors (one error type, one handler), hardware (device, dtype,
peak FLOP/s), hf (Hugging Face weights in and out), loader (batches, exact eval), optim (Muon),
planner (memory), prepare (datasets), tokenizer, tracking (wandb).
"""
