import pytest

from cdlm.data import TextDataModule, load_texts


def test_embedded_default_shapes_and_padding():
    dm = TextDataModule(num_examples=300, batch_size=8, seq_len=40)
    dm.setup("fit")
    ids, mask = next(iter(dm.train_dataloader()))
    assert ids.shape == mask.shape == (8, 40)
    assert mask[:, 0].all() and not mask.all()  # sentences start real and end in padding
    assert (ids[~mask] == 0).all()
    text = dm.texts()[0][0]
    assert dm.tokenizer.decode(ids[0][mask[0]].tolist()) in dm.texts()[0]
    assert len(text.split()) <= 40


def test_packed_local_text_splits_first_part_for_training(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("abcdefghij" * 100)
    dm = TextDataModule(dataset=str(path), tokenizer="char", seq_len=16, packing=True, batch_size=4, val_fraction=0.1)
    train, val = dm.texts()
    assert train[0] + val[0] == "abcdefghij" * 100 and len(val[0]) == 100
    dm.setup("fit")
    ids, mask = next(iter(dm.train_dataloader()))
    assert ids.shape == (4, 16) and mask.all()


def test_csv_column(tmp_path):
    path = tmp_path / "e2e.csv"
    path.write_text('mr,ref\n"name[a]","the a is a pub ."\n"name[b]","the b is a cafe ."\n"name[c]","c is nice ."\n')
    assert load_texts(str(path), "ref") == ["the a is a pub .", "the b is a cafe .", "c is nice ."]
    with pytest.raises(ValueError, match="no column 'text'; columns: mr, ref"):
        load_texts(str(path), "text")


def test_bad_data_inputs(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.txt.*holds no text"):
        load_texts(str(empty))
    with pytest.raises(ValueError, match="missing.txt.*does not exist"):
        load_texts(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="'no-such-user/no-such-dataset'.*offline"):
        load_texts("no-such-user/no-such-dataset")
    with pytest.raises(ValueError, match="seq_len must be at least 2, got 0"):
        TextDataModule(seq_len=0)
