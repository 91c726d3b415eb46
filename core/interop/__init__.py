"""Other programs' formats: Hugging Face folders, GGUF, karpathy/nanoGPT's checkpoint files."""
