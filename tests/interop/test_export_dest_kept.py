"""core/interop/export_dest.py: what a forced export into a folder reports as left alone."""

from core.interop import export_dest


def test_a_forced_export_names_only_the_entries_it_did_not_write(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    (dest / "config.json").write_text("old")
    (dest / "extra").mkdir()
    kept = export_dest.export_folder(str(dest), {"config.json": "{}", "model.bin": b"\0\1"}, force=True)
    assert sorted(kept) == ["extra", "notes.txt"]
    assert (dest / "config.json").read_text() == "{}" and (dest / "notes.txt").read_text() == "mine"
    assert export_dest.export_folder(str(tmp_path / "fresh"), {"a.txt": "x"}) == []
