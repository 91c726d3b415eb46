"""Code the scripts share: nothing here is run directly.

checkpoint (atomic, weights-only I/O), errors (one error type, one handler), hardware (device, dtype,
peak FLOP/s), hf (Hugging Face weights in and out; hf_modeling is the modeling file exports carry),
export_dest (where an export lands), gguf_export (llama.cpp files), nanogpt (karpathy/nanoGPT's checkpoints), loader (batches, exact eval), optim (Muon),
planner (memory), prepare (datasets), runs (a run folder's lock), tokenizer, tracking (wandb).
"""
