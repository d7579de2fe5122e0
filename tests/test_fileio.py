import json

import pytest

from ramanseg.fileio import json_bytes, write_files, write_json


def test_write_files_takes_bytes_and_writers(tmp_path):
    def writer(path):
        path.write_text("from a writer")

    written = write_files({tmp_path / "a.bin": b"bytes", tmp_path / "sub" / "b.txt": writer})
    assert written == [tmp_path / "a.bin", tmp_path / "sub" / "b.txt"]
    assert (tmp_path / "a.bin").read_bytes() == b"bytes"
    assert (tmp_path / "sub" / "b.txt").read_text() == "from a writer"


def test_write_files_removes_what_it_wrote_when_a_later_file_fails(tmp_path):
    def failing(path):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_files({tmp_path / "first.bin": b"x", tmp_path / "second.bin": failing})
    assert list(tmp_path.iterdir()) == []


def test_json_documents_are_indented_and_newline_terminated(tmp_path):
    data = {"b": [1, 2], "a": None}
    assert json_bytes(data) == (json.dumps(data, indent=2) + "\n").encode()
    path = write_json(tmp_path / "out" / "doc.json", data)
    assert path.read_bytes() == json_bytes(data)
    assert [p.name for p in path.parent.iterdir()] == ["doc.json"]  # no temporary left
