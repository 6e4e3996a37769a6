"""results.py: the layout's records; a finished `ok` result is never replaced."""

import json

import pytest

from titanbench import results
from titanbench.errors import TitanbenchError


def test_an_ok_result_is_never_replaced(tmp_path):
    results.write_result(tmp_path, "m", "c", {"status": "ok", "attempt": 1})
    path = results.config_dir(tmp_path, "m", "c") / results.RESULT_FILE
    before = path.read_bytes()
    with pytest.raises(TitanbenchError, match="m/c already finished ok"):
        results.write_result(tmp_path, "m", "c", {"status": "failed", "attempt": 2})
    assert path.read_bytes() == before


def test_any_other_result_is_replaced_by_the_next_attempt(tmp_path):
    results.write_result(tmp_path, "m", "c", {"status": "failed", "attempt": 1})
    results.write_result(tmp_path, "m", "c", {"status": "ok", "attempt": 2})
    assert json.loads((results.config_dir(tmp_path, "m", "c") / results.RESULT_FILE).read_text())["attempt"] == 2


def test_a_status_outside_the_known_ones_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown status 'fine'"):
        results.write_result(tmp_path, "m", "c", {"status": "fine"})
    assert not (tmp_path / "m").exists()
