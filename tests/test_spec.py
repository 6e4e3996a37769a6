"""Matrix specs: the built-in matrices load, and every kind of invalid spec fails with file, key path and reason."""

import copy
from pathlib import Path

import pytest
import yaml

from titanbench.errors import TitanbenchError
from titanbench.paths import runs_dir
from titanbench.spec import load_spec, resolve_models

CONFIG_IDS = [
    "vanilla-bf16",
    "async-bf16",
    "vanilla-float8_tensorwise",
    "async-float8_tensorwise",
    "vanilla-float8_rowwise",
    "async-float8_rowwise",
]


def builtin(name: str) -> dict:
    return yaml.safe_load((runs_dir() / f"{name}.yaml").read_text())


@pytest.mark.parametrize(("ref", "model"), [("8b", "llama3_8b"), ("llama3_70b", "llama3_70b"), ("70b", "llama3_70b")])
def test_model_resolves_by_id_or_alias(ref, model):
    spec = load_spec(ref)
    assert spec.model == model
    assert [c.id for c in spec.configs] == CONFIG_IDS


def test_the_smoke_runs_on_cpu_with_processes_standing_in_for_gpus():
    smoke = load_spec("smoke")
    assert smoke.devices == ("cuda", "cpu") and load_spec("8b").devices == ("cuda",)
    assert smoke.reference_topology("cpu").model_dump() == {"nodes": 1, "gpus_per_node": 4, "tp": 2, "fsdp": 2}
    assert smoke.reference_topology("cuda") == smoke.topology
    assert [c.id for c in smoke.configs] == [c.id for c in load_spec("70b").configs]
    assert [c.id for c in smoke.configs if c.cpu.skip] == ["vanilla-float8_rowwise", "async-float8_rowwise"]


def test_all_is_both_builtin_matrices():
    assert sorted(s.model for s in resolve_models("all")) == ["llama3_70b", "llama3_8b"]


def test_spec_path_loads_a_users_own_matrix(tmp_path):
    data = builtin("llama3_8b")
    data["model"] = "my_llama"
    data["aliases"] = []
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_spec(str(path)).model == "my_llama"


# The published speedup column follows from the published averages in the specs.
@pytest.mark.parametrize(
    ("model", "speedups"),
    [("llama3_70b", ["1.09", "1.16", "1.04"]), ("llama3_8b", ["1.10", "1.10", "1.06"])],
)
def test_published_numbers_give_the_published_speedups(model, speedups):
    spec = load_spec(model)
    tps = {c.id: c.published_tps for c in spec.configs}
    computed = [
        f"{tps[f'async-{q}'] / tps[f'vanilla-{q}']:.2f}" for q in ("bf16", "float8_tensorwise", "float8_rowwise")
    ]
    assert computed == speedups


DELETE = object()


def _set(data: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        data = data[key]
    if value is DELETE:
        del data[path[-1]]
    else:
        data[path[-1]] = value


# (name, edit of the 8B spec as (key path, new value), fragment of the expected error)
INVALID_SPECS = [
    ("missing key", (("train_config",), DELETE), "train_config: Field required"),
    ("typo key", (("topologyy",), {}), "topologyy: Extra inputs are not permitted"),
    ("steps not a number", (("configs", 0, "steps"), "many"), "configs.0.steps"),
    ("steps zero", (("configs", 2, "steps"), 0), "configs.2.steps: Input should be greater than or equal to 1"),
    ("bad tp type", (("configs", 1, "tp_type"), "fast"), "configs.1.tp_type"),
    ("async label, vanilla flags", (("configs", 0, "tp_type"), "async"), "tp_type 'async' disagrees"),
    ("rowwise label, tensorwise flags", (("configs", 2, "quantization"), "float8_rowwise"), "they say"),
    ("steps in flags", (("configs", 0, "flags"), "--training.steps=5"), "must not set --training.steps"),
    ("unbalanced quote", (("configs", 0, "flags"), '--model.converters="float8'), "cannot split"),
    ("tp flag vs topology", (("topology", "tp"), 4), "topology"),
    ("degrees vs world", (("topology", "fsdp"), 2), "tp x fsdp = 16"),
    ("duplicate ids", (("configs", 1, "id"), "vanilla-bf16"), "duplicate config ids: vanilla-bf16"),
    (
        "two configs for one cell",
        (("configs", 1), {"id": "vanilla-bf16-again", "tp_type": "vanilla", "quantization": "bf16", "steps": 10}),
        "two configs for one table cell (vanilla bf16)",
    ),
    ("heading batch vs flags", (("heading", "local_batch_size"), 16), "heading.local_batch_size is 16 but"),
    ("negative published tps", (("configs", 0, "published_tps"), -1), "configs.0.published_tps"),
    # `--name value` would run in torchtitan while every check that reads `name=value` misses it.
    ("space form", (("configs", 0, "flags"), "--training.steps 7"), "'7' after --training.steps: write each flag"),
    ("space form, common", (("common_flags",), "--training.compile --metrics.log_freq 5"), "'5' after"),
    ("cpu config, cuda-only matrix", (("configs", 0, "cpu"), {"skip": "no"}), "has no `cpu` section"),
    ("unknown substitution", (("configs", 0, "cpu"), {"substitutions": ["magic"]}), "unknown CPU substitution"),
    ("cpu processes vs tp", (("cpu",), {"processes_per_node": 3}), "not a multiple of topology.tp 8"),
    ("absurd steps", (("configs", 0, "steps"), 10**21), "configs.0.steps: Input should be less than or equal to"),
    ("absurd nodes", (("topology", "nodes"), 10**20), "topology.nodes: Input should be less than or equal to"),
]


@pytest.mark.parametrize(("edit", "fragment"), [c[1:] for c in INVALID_SPECS], ids=[c[0] for c in INVALID_SPECS])
def test_invalid_spec_names_file_key_and_reason(tmp_path, edit, fragment):
    data = copy.deepcopy(builtin("llama3_8b"))
    _set(data, *edit)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(TitanbenchError) as error:
        load_spec(str(path))
    message = error.value.message
    assert message.startswith(f"{path}: invalid spec: ")
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("model: [unclosed\n", "malformed YAML at line"), ("- a list\n", "must be a YAML mapping"), ("", "got NoneType")],
)
def test_malformed_yaml_is_one_line(tmp_path, text, fragment):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(TitanbenchError, match=fragment):
        load_spec(str(path))


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(TitanbenchError, match=r"unknown model '405b'.*llama3_8b.*8b.*a path to a spec file"):
        load_spec("405b")


def test_missing_spec_file():
    with pytest.raises(TitanbenchError, match="no such spec file"):
        load_spec(str(Path("does/not/exist.yaml")))


def test_spec_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("title: Llama caf\xe9\n".encode("latin-1"))
    with pytest.raises(TitanbenchError, match="a spec must be UTF-8 text"):
        load_spec(str(path))


def test_a_huge_spec_file_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("# padding\n" * 200_000)
    with pytest.raises(TitanbenchError, match="a spec is a few KB"):
        load_spec(str(path))
