"""core/inference/prompts.py's prompts_in splits at blank lines and trims only the line breaks around each prompt:
spaces are part of a prompt (an indented line of code, a trailing space the tokenizer reads as its own token)."""

from core.inference.prompts import prompts_in


def test_spaces_at_either_end_of_a_prompt_are_kept(tmp_path):
    path = tmp_path / 'p.txt'
    path.write_text('\n    return x\n\nOnce upon a \n\n\tdef f():\n        pass\n', encoding='utf-8')
    # written out by hand: three prompts, each with its own spaces and tabs
    assert prompts_in(str(path)) == ['    return x', 'Once upon a ', '\tdef f():\n        pass']
