"""rodimus_lab.files.read_jsonl: an append a kill cut short is left out, damage anywhere else is named."""

import json

import pytest

from rodimus_lab.files import read_jsonl

ROWS = [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.25, "note": "é\u2028"}]   # \u2028: not a line end here
WHOLE = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS)


def test_complete_lines_read_back_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text(WHOLE.replace("\n", "\n\n", 1), encoding="utf-8")
    assert read_jsonl(path) == ROWS
    path.write_text(WHOLE.rstrip("\n"), encoding="utf-8")   # a last line whose newline is all that is missing
    assert read_jsonl(path) == ROWS


@pytest.mark.parametrize("cut", ['{"step": 3, "lo', '{"step": 3, "note": "\xe9'])
def test_a_last_line_cut_short_is_left_out(tmp_path, cut):
    path = tmp_path / "log.jsonl"
    data = (WHOLE + cut).encode("utf-8")
    path.write_bytes(data[:-1] if cut.endswith("\xe9") else data)   # the second one ends inside a character
    assert read_jsonl(path) == ROWS


@pytest.mark.parametrize("text, line, what", [
    (WHOLE.replace("\n", '\n{"step": 1.5, "lo\n', 1), 2, "not JSON"),   # damage in the middle
    (WHOLE + '{"step": 3, "lo\n', 3, "not JSON"),   # a bad last line that was finished with its newline
    (WHOLE + "[1, 2]\n", 3, "list, not a JSON object"),
])
def test_a_bad_line_anywhere_else_is_named(tmp_path, text, line, what):
    path = tmp_path / "log.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=f"log.jsonl, line {line}, is {what}.*delete or repair that line"):
        read_jsonl(path)


def test_a_missing_file(tmp_path):
    assert read_jsonl(tmp_path / "none.jsonl", missing_ok=True) == []
    with pytest.raises(FileNotFoundError, match="none.jsonl does not exist"):
        read_jsonl(tmp_path / "none.jsonl")
