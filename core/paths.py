"""Where the repository's own folders are, from wherever the package is imported."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout's root
DATA_DIR = os.path.join(REPO, 'data')  # data/<name>/ holds each prepared dataset
ASSETS = os.path.join(REPO, 'assets')  # files the code ships with: the GPT-2 BPE ranks, the chat page


def resolve_data_dir(dataset):
    """A dataset name under data/, or a path to a prepared folder."""
    if os.sep in dataset or dataset.startswith('.'):
        return os.path.abspath(dataset)
    return os.path.join(DATA_DIR, dataset)
