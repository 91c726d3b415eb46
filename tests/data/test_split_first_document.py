"""prepare's split by documents: the last documents holding about val_fraction of the characters are val, and at
least one document stays train, even when the first document alone holds more than 1 - val_fraction of the text."""

from core.data import writer


def test_the_first_document_stays_train_however_large_it_is():
    docs = ['a' * 95, 'b' * 5]  # val wants 10 characters, and the last document has only 5
    train, val = writer.split_train_val(docs, 0.1, by_documents=True)
    assert train == ['a' * 95] and val == ['b' * 5]
    assert writer.first_val_document([95, 5], 0.1) == 1
    assert writer.first_val_document([95, 3, 2], 0.5) == 1


def test_val_takes_the_last_documents_until_it_holds_val_fraction():
    # by hand: 10% of 100 characters is 10; from the end 4 (short), then 4 + 6 = 10 (enough)
    assert writer.first_val_document([50, 40, 6, 4], 0.1) == 2
    assert writer.split_train_val(['x' * 50, 'y' * 40, 'z' * 6, 'w' * 4], 0.1, by_documents=True) == \
        (['x' * 50, 'y' * 40], ['z' * 6, 'w' * 4])
