"""The engine's Sequence: over a long generation the text it keeps of the settled tokens joins the rest exactly, also
when a multi-byte character's bytes straddle the point where it settles; and a stop string that opens the reply ends it."""

from core.inference.engine import Params, Sequence


def byte_decode(ids):
    # a byte-level tokenizer written out: every id is one byte, a cut character decodes to U+FFFD
    return bytes(ids).decode('utf-8', errors='replace')


def test_a_long_generation_of_two_byte_characters_comes_out_whole():
    text = 'é' * 60  # 120 bytes; every character's second byte sits at an odd index
    ids = list(text.encode('utf-8'))
    seq = Sequence([1], Params(max_tokens=len(ids)), decode=byte_decode)
    streamed = ''.join(seq.feed(t) for t in ids)
    assert seq.finish_reason == 'length'
    assert seq.text == text and streamed == text
    assert '\ufffd' not in seq.text


def test_settling_at_every_offset_keeps_three_and_four_byte_characters():
    # the first settle happens after 65 tokens, at token 57: shift the characters so that each byte position of a
    # character lands there once
    for lead in range(4):
        text = 'a' * lead + '日🙂' * 30
        ids = list(text.encode('utf-8'))
        seq = Sequence([1], Params(max_tokens=len(ids)), decode=byte_decode)
        streamed = ''.join(seq.feed(t) for t in ids)
        assert (seq.text, streamed) == (text, text), lead


def test_a_stop_string_at_the_very_start_of_the_reply_ends_it():
    seq = Sequence([1], Params(max_tokens=10, stop=('\n\n',)), decode=byte_decode)
    released = [seq.feed(t) for t in b'\n\nHello']
    assert seq.finish_reason == 'stop'
    assert seq.text == '' and ''.join(released) == ''
    assert seq.out == list(b'\n\n')  # nothing read after the stop
