"""Datasets: tokenizers, the prepare pipeline and its readers, the training loader, chat data."""
