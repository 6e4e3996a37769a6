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


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"status": 5}, "status"),
        ({"status": "ok", "attempt": "two"}, "attempt"),
        ({"status": "ok", "log_tail": "not a list"}, "log_tail"),
        ({"reason": "no status at all"}, "status"),
    ],
)
def test_a_corrupted_result_is_one_error_naming_its_field(tmp_path, record, field):
    path = results.config_dir(tmp_path, "m", "c") / results.RESULT_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    with pytest.raises(TitanbenchError, match=rf"^{path}: {field}: "):
        results.read_result(tmp_path, "m", "c")


@pytest.mark.parametrize(
    ("record", "field"),
    [({"timings": []}, "timings"), ({"sessions": {}}, "sessions"), ({"fingerprint": 7}, "fingerprint")],
)
def test_a_corrupted_run_record_is_one_error_naming_its_field(tmp_path, record, field):
    (tmp_path / results.RUN_FILE).write_text(json.dumps(record))
    with pytest.raises(TitanbenchError, match=rf"^{tmp_path / results.RUN_FILE}: {field}: "):
        results.read_run(tmp_path)
