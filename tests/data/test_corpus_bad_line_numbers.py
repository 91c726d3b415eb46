"""core/data/corpus.py names a bad record by its file and line (jsonl) or row (parquet), counted from 1, however
the input is cut into worker tasks. The line numbers expected are counted here by hand from the file written."""

import json

import pytest

from core.data import corpus
from core.data import tokenizer as tk


def bad_records(tasks):
    corpus._init(tk.gpt2().state(), 'text', 'text')
    return [(line, why) for task in tasks for _, line, why in corpus.encode_task(task)[4]]


def test_a_bad_jsonl_line_is_named_by_its_line_in_any_task(tmp_path):
    path = tmp_path / 'c.jsonl'
    lines = [json.dumps({'text': f'doc {i}'}) for i in range(10)]
    lines[1], lines[7] = 'not json', json.dumps({'body': 'no text field'})  # lines 2 and 8 of the file
    path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    size = len(lines[0]) + 1
    for task_bytes in (1 << 20, size, 3 * size):  # one task, a line a task, about three lines a task
        tasks = list(corpus.tasks([str(path)], 'text', 'none', task_bytes=task_bytes))
        found = bad_records(tasks)
        assert [line for line, _ in found] == [2, 8], task_bytes
        assert 'not JSON' in found[0][1] and "no 'text' field" in found[1][1]


def test_a_null_parquet_value_is_named_by_its_row(tmp_path):
    pa = pytest.importorskip('pyarrow')
    pq = pytest.importorskip('pyarrow.parquet')
    texts = [f'doc {i}' for i in range(2500)]
    texts[0], texts[2049] = None, None  # rows 1 and 2050, the second in the third batch of 1024
    path = tmp_path / 'c.parquet'
    pq.write_table(pa.table({'text': texts}), path)
    found = bad_records(corpus.tasks([str(path)], 'text', 'none'))
    assert [line for line, _ in found] == [1, 2050]
    assert all('empty (null)' in why for _, why in found)


def test_skipped_records_are_counted_and_the_first_is_named(tmp_path, capsys):
    path = tmp_path / 'c.jsonl'
    lines = [json.dumps({'text': f'document number {i}'}) for i in range(8)]
    lines[2], lines[5] = 'not json', '{"text": 5}'  # lines 3 and 6
    path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
    corpus.prepare_records(str(path), str(tmp_path / 'out'), on_bad_line='skip', progress=False)
    said = capsys.readouterr()
    assert f'skipped 2 bad record(s); the first: {path}:3: not JSON' in said.out + said.err
