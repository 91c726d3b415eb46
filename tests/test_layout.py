"""The layout: shared code in core/ finds the repo's data/ and assets/ from wherever it is imported."""

import os

from core import paths
from core.data import tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_dataset_names_resolve_under_the_repos_data_folder():
    assert paths.resolve_data_dir('shakespeare_char') == os.path.join(REPO, 'data', 'shakespeare_char')


def test_gpt2_ranks_file_is_found_in_assets():
    assert os.path.isfile(tokenizer.GPT2_RANKS)
    assert os.path.dirname(tokenizer.GPT2_RANKS) == os.path.join(REPO, 'assets')
