"""HellaSwag examples that cannot be a choice are refused with their line, not scored."""

import json

import pytest

from core.errors import UserError
from core.evaluation import hellaswag

GOOD = {'ctx': 'A man sits at a piano. He', 'endings': ['plays a tune.', 'eats it.', 'is a dog.', 'flies away.'],
        'label': 0}


@pytest.mark.parametrize('endings, what', [(['', '', '', ''], 'empty'), ([' ', '', '\n', ''], 'empty'),
                                           (['plays.', 'plays.', ' plays.', 'plays. '], 'the same')])
def test_endings_that_leave_no_choice_are_refused(tmp_path, endings, what):
    path = tmp_path / 'hs.jsonl'
    path.write_text(json.dumps(GOOD) + '\n' + json.dumps(dict(GOOD, endings=endings)) + '\n')
    with pytest.raises(UserError, match=rf"hs.jsonl line 2: its 4 endings are all {what}, so there is no choice to score"):
        hellaswag.load_examples(str(path))
    path.write_text(json.dumps(GOOD) + '\n' + json.dumps(dict(GOOD, endings=['', 'a', '', ''])) + '\n')
    assert len(hellaswag.load_examples(str(path))) == 2  # one empty ending among others is still a choice
