"""The checks on paths a user names (`sweeps.files`): one line naming the path, nothing written."""

from __future__ import annotations

import pytest

from sweeps.files import check_writable_dir, read_text_file
from tests.sweeps.cli_helpers import digest


def test_read_text_file_names_the_file_and_what_is_wrong(tmp_path):
    (tmp_path / "ok.toml").write_text("name = 'é'\n", encoding="utf-8")
    assert read_text_file(tmp_path / "ok.toml", "sweep file") == "name = 'é'\n"
    (tmp_path / "binary.toml").write_bytes(b"\x7fELF\x02\x01\x00\x00")
    (tmp_path / "latin1.toml").write_bytes("name = 'é'".encode("latin-1"))
    (tmp_path / "a_file").write_text("x")
    cases = {
        tmp_path: "is a directory, not a file",
        tmp_path / "absent.toml": "does not exist",
        tmp_path / "a_file" / "x.toml": "is a file",
        tmp_path / "binary.toml": "not a text file",
        tmp_path / "latin1.toml": "not a UTF-8 text file (byte 8 is 0xe9)",
    }
    for path, reason in cases.items():
        with pytest.raises(ValueError) as error:
            read_text_file(path, "sweep file")
        message = str(error.value)
        assert message.startswith(f"sweep file {str(path)!r} ") and reason in message and "\n" not in message


def test_check_writable_dir_creates_nothing(tmp_path):
    (tmp_path / "a_file").write_text("x")
    before = digest(tmp_path)
    check_writable_dir(tmp_path / "new" / "deeper", "--out")
    check_writable_dir(tmp_path, "--out")
    with pytest.raises(ValueError, match=r"^--out '.*a_file' is a file, not a directory$"):
        check_writable_dir(tmp_path / "a_file", "--out")
    with pytest.raises(ValueError, match=r"cannot be a directory: '.*a_file' is a file$"):
        check_writable_dir(tmp_path / "a_file" / "sub" / "sweep", "--out")
    assert digest(tmp_path) == before
