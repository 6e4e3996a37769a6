"""results.py: the layout's records; a finished `ok` result is never replaced."""

import json

import pytest
from pydantic import ValidationError

from titanbench import results
from titanbench.errors import TitanbenchError
from titanbench.results import ConfigResult


def test_an_ok_result_is_never_replaced(tmp_path):
    results.write_result(tmp_path, "m", "c", ConfigResult(status="ok", attempt=1))
    path = results.config_dir(tmp_path, "m", "c") / results.RESULT_FILE
    before = path.read_bytes()
    with pytest.raises(TitanbenchError, match="m/c already finished ok"):
        results.write_result(tmp_path, "m", "c", ConfigResult(status="failed", attempt=2))
    assert path.read_bytes() == before


def test_any_other_result_is_replaced_by_the_next_attempt(tmp_path):
    results.write_result(tmp_path, "m", "c", ConfigResult(status="failed", attempt=1))
    results.write_result(tmp_path, "m", "c", ConfigResult(status="ok", attempt=2))
    assert json.loads((results.config_dir(tmp_path, "m", "c") / results.RESULT_FILE).read_text())["attempt"] == 2


def test_a_status_outside_the_known_ones_is_refused():
    with pytest.raises(ValidationError, match="status"):
        ConfigResult.model_validate({"status": "fine"})


def test_a_record_keeps_the_keys_it_was_given_and_what_its_writer_added(tmp_path):
    """Defaults are not written out, unknown keys pass through: the file holds what the writer meant."""
    record = {"status": "failed", "attempt": 1, "reason": "", "from_a_newer_writer": {"x": 1}}
    results.write_result(tmp_path, "m", "c", ConfigResult.model_validate(record))
    path = results.config_dir(tmp_path, "m", "c") / results.RESULT_FILE
    assert json.loads(path.read_text()) == record
    assert results.read_result(tmp_path, "m", "c") == ConfigResult.model_validate(record)


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


def trials_result(*statuses: str, status: str = "incomplete") -> ConfigResult:
    trials = [{"trial": k, "status": s, "log": f"train.trial{k}.log"} for k, s in enumerate(statuses, start=1)]
    return ConfigResult.model_validate({"status": status, "repeat": 3, "trials": trials})


def test_an_ok_trial_is_kept_by_every_later_result(tmp_path):
    results.write_result(tmp_path, "m", "c", trials_result("ok", "failed"))
    path = results.config_dir(tmp_path, "m", "c") / results.RESULT_FILE
    before = path.read_bytes()
    changed = trials_result("ok", "failed")
    changed.trials[0].log = "train.trial1.log.attempt1"
    for dropping in (trials_result(), changed, ConfigResult(status="failed")):
        with pytest.raises(TitanbenchError, match="m/c trial 1 already finished ok"):
            results.write_result(tmp_path, "m", "c", dropping)
        assert path.read_bytes() == before
    results.write_result(tmp_path, "m", "c", trials_result("ok", "ok"))
    assert [t.status for t in results.read_result(tmp_path, "m", "c").trials] == ["ok", "ok"]


def test_trial_logs_are_named_per_trial_and_find_their_config(tmp_path):
    assert results.log_path(tmp_path, "m", "c", trial=2).name == "train.trial2.log"
    assert results.log_path(tmp_path, "m", "c", 1, trial=2).name == "node1.trial2.log"
    assert results.log_path(tmp_path, "m", "c", 1).name == "node1.log"
    folder = results.config_dir(tmp_path, "m", "c")
    folder.mkdir(parents=True)
    for name in ("train.trial2.log", "train.trial10.log", "train.trial1.log.attempt1", "node1.trial1.log"):
        (folder / name).write_text("")
    assert results.config_folders(tmp_path) == [("m", "c")]
    assert results.trial_logs(tmp_path, "m", "c") == {2: folder / "train.trial2.log", 10: folder / "train.trial10.log"}
