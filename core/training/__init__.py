"""Training machinery: set-up, checkpoints, run folders, optimizers, LoRA, tracking, the memory planner and
the parameter and FLOP accounting beside it."""
