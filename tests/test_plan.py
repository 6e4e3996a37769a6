"""plan.py: the published flags exactly, declared bundle additions, deviations, guards, env, argv."""

import os
import re
import shlex
from pathlib import Path

import pytest

from titanbench.errors import TitanbenchError
from titanbench.plan import (
    Locations,
    Overrides,
    Rendezvous,
    build_plan,
    matrix_fingerprint,
    state_gib_per_gpu,
    topology_for,
    validate_with_torchtitan,
)
from titanbench.spec import flag_value, load_spec, resolve_models

# The published commands, restated from the benchmark file (reference-facts.md), independently of runs/*.yaml.
PUBLISHED_COMMON = {
    "llama3_70b": '--activation_checkpoint.mode="full" --training.local-batch-size=16 --training.compile '
    "--parallelism.tensor_parallel_degree=8",
    "llama3_8b": '--activation_checkpoint.mode="selective" --activation_checkpoint.selective_ac_option="op" '
    "--training.local-batch-size=12 --training.compile --parallelism.tensor_parallel_degree=8",
}
STEPS_70B = {
    "vanilla-bf16": 200,
    "async-bf16": 100,
    "vanilla-float8_tensorwise": 200,
    "async-float8_tensorwise": 200,
    "vanilla-float8_rowwise": 100,
    "async-float8_rowwise": 100,
}
# The same six configs; 8B ran 100 steps for all of them.
PUBLISHED_STEPS = {"llama3_70b": STEPS_70B, "llama3_8b": dict.fromkeys(STEPS_70B, 100)}
QUANT_FLAGS = {
    "bf16": "",
    "float8_tensorwise": '--model.converters="float8"',
    "float8_rowwise": '--model.converters="float8" --float8.recipe_name="rowwise"',
}
ASYNC = "--parallelism.enable_async_tensor_parallel"
PUBLISHED_TOPOLOGY = {
    "llama3_70b": {"nodes": 32, "gpus_per_node": 8, "tp": 8, "fsdp": 32},
    "llama3_8b": {"nodes": 8, "gpus_per_node": 8, "tp": 8, "fsdp": 8},
}
TRAIN_CONFIG = "torchtitan/models/llama3/train_configs/{}.toml"


def published_args(model: str, config: str) -> set[str]:
    tp_type, quantization = config.split("-")
    words = [*shlex.split(PUBLISHED_COMMON[model]), f"--training.steps={PUBLISHED_STEPS[model][config]}"]
    words += shlex.split(QUANT_FLAGS[quantization]) + ([ASYNC] if tp_type == "async" else [])
    return set(words)


@pytest.fixture
def locations(tmp_path) -> Locations:
    return Locations(run_dir=tmp_path / "run", cache_root=tmp_path / "cache", torchtitan_dir=tmp_path / "tt")


def plans_for(model: str, locations: Locations, rendezvous: Rendezvous | None = None, **overrides):
    return build_plan(resolve_models(model), Overrides(**overrides), rendezvous or Rendezvous(), locations)


def test_all_twelve_configs_carry_exactly_the_published_flags_plus_declared_bundle_flags(locations):
    plans = plans_for("all", locations)
    assert len(plans) == 12
    for plan in plans:
        args = plan.torchtitan_args
        assert args[:2] == ["--job.config_file", TRAIN_CONFIG.format(plan.model)]
        bundle = [b["flag"] for b in plan.bundle_flags]
        assert all(b["reason"] for b in plan.bundle_flags)
        assert set(args[2:]) - set(bundle) == published_args(plan.model, plan.config), plan.config
        assert len(args) == 2 + len(published_args(plan.model, plan.config)) + len(bundle)
        assert args[-len(bundle) :] == bundle, "bundle flags come after the published ones"
        assert plan.topology.model_dump() == PUBLISHED_TOPOLOGY[plan.model]
        assert plan.deviations == []
        assert plan.steps == PUBLISHED_STEPS[plan.model][plan.config]
        assert plan.published_tps == load_spec(plan.model).config(plan.config).published_tps


def test_bundle_flags_change_nothing_computed(locations):
    # Only output locations and log colouring: torchtitan's compute-side sections are untouched.
    for plan in plans_for("all", locations):
        for flag in (b["flag"] for b in plan.bundle_flags):
            assert flag.split("=")[0] in ("--job.dump_folder", "--metrics.disable_color_printing")


def test_launcher_uses_static_rendezvous_then_the_trainer_module(locations):
    rendezvous = Rendezvous(node_rank=3, master_addr="10.0.0.1", master_port=29600)
    plan = plans_for("70b", locations, rendezvous)[1]
    argv = plan.launcher_argv
    assert argv[0] == "torchrun"
    pairs = dict(zip(argv[1:11:2], argv[2:11:2], strict=True))
    assert pairs == {
        "--nnodes": "32",
        "--nproc-per-node": "8",
        "--node-rank": "3",
        "--master-addr": "10.0.0.1",
        "--master-port": "29600",
    }
    assert argv[argv.index("--rdzv-backend") + 1] == "static", "rank 0 on node 0 needs static rendezvous"
    module = argv.index("-m")
    assert argv[module + 1] == "torchtitan.train"
    assert argv[module + 2 :] == plan.torchtitan_args


def test_env_has_the_allocator_setting_and_one_compile_cache_per_config(locations):
    plans = plans_for("all", locations)
    for plan in plans:
        assert plan.env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
        assert set(plan.env) == set(plan.env_reasons)
        assert "HF_HUB_OFFLINE" not in plan.env
    caches = [(p.env["TORCHINDUCTOR_CACHE_DIR"], p.env["TRITON_CACHE_DIR"]) for p in plans]
    flat = [d for pair in caches for d in pair]
    assert len(set(flat)) == len(flat) == 24
    assert all(Path(d).is_relative_to(locations.cache_root) for d in flat)


# Overrides and the deviations they must produce: (overrides, expected deviation fragments, expected args).
DEVIATION_CASES = [
    ({"nodes": 1, "tp": 4}, ["nodes 1 (published 8)", "tp 4 (published 8)", "fsdp 2 (published 8)"], []),
    ({"steps": 30}, ["steps 30 (published 100)"], ["--training.steps=30"]),
    ({"profiling": False}, ["profiler off"], ["--profiling.no-enable-profiling"]),
    ({"dataset": "c4_test"}, ["dataset c4_test (published c4)"], ["--training.dataset=c4_test"]),
    ({"dataset": "c4"}, [], []),
    ({"nodes": 8}, [], []),
    ({"nodes": 2, "gpus_per_node": 4, "tp": 4}, ["nodes 2", "gpus_per_node 4", "tp 4", "fsdp 2"], []),
]


@pytest.mark.parametrize(("given", "deviations", "args"), DEVIATION_CASES)
def test_every_override_is_a_listed_deviation(locations, given, deviations, args):
    for plan in plans_for("8b", locations, **given):
        assert len(plan.deviations) == len(deviations), plan.deviations
        for fragment, deviation in zip(deviations, plan.deviations, strict=True):
            assert fragment in deviation
        for arg in args:
            assert arg in plan.torchtitan_args
        tp = plan.topology.tp
        assert f"--parallelism.tensor_parallel_degree={tp}" in plan.torchtitan_args
        assert sum(a.startswith("--training.steps=") for a in plan.torchtitan_args) == 1


def test_local_data_sets_hub_offline(locations, tmp_path):
    for overrides in ({"dataset": "c4_test"}, {"dataset_path": str(tmp_path / "c4")}):
        plan = plans_for("8b", locations, **overrides)[0]
        assert plan.env["HF_HUB_OFFLINE"] == "1"
    plan = plans_for("8b", locations, dataset_path=str(tmp_path / "c4"))[0]
    assert f"--training.dataset_path={tmp_path / 'c4'}" in [b["flag"] for b in plan.bundle_flags]
    assert plan.deviations == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nodes": 1}, r"FSDP degree 1 .*fp32.*--tp 4 for FSDP 2.*--allow-fp32"),
        ({"nodes": 1, "tp": 3}, "TP degree 3 does not divide the world size 8"),
        ({"nodes": 2, "tp": 16}, "TP degree 16 must divide the GPUs per node"),
    ],
)
def test_guards_refuse_before_anything_runs(locations, overrides, message):
    with pytest.raises(TitanbenchError, match=message):
        plans_for("8b", locations, **overrides)


def test_fp32_allowed_explicitly_is_a_deviation(locations):
    plan = plans_for("8b", locations, nodes=1, allow_fp32=True)[0]
    assert plan.topology.fsdp == 1
    assert any("fp32" in d for d in plan.deviations)


def test_memory_guard():
    spec = load_spec("70b")
    one_node = topology_for(spec, Overrides(nodes=1, tp=4))
    # 70.6e9 params x 16 bytes / 8 GPUs: the facts doc's ~131 GiB per GPU.
    assert state_gib_per_gpu(spec, one_node) == pytest.approx(131.5, abs=0.5)
    assert state_gib_per_gpu(spec, topology_for(spec, Overrides())) == pytest.approx(4.1, abs=0.1)


def test_memory_guard_refuses_unless_forced(locations):
    with pytest.raises(TitanbenchError, match=r"need 131\.\d GiB per GPU at FSDP 2 x TP 4.*--force"):
        plans_for("70b", locations, nodes=1, tp=4)
    assert plans_for("70b", locations, nodes=1, tp=4, force=True)
    assert plans_for("70b", locations, nodes=1, tp=4, gpu_mem_gib=141)


def test_only_selects_configs_and_rejects_unknown(locations):
    plans = build_plan(resolve_models("8b"), Overrides(), Rendezvous(), locations, only=("async-bf16",))
    assert [p.config for p in plans] == ["async-bf16"]
    with pytest.raises(TitanbenchError, match="--only 'nope' matches no config"):
        build_plan(resolve_models("8b"), Overrides(), Rendezvous(), locations, only=("nope",))


def test_fingerprint_is_what_is_computed_not_where_files_go(tmp_path):
    here = Locations(tmp_path / "a", tmp_path / "ca", tmp_path / "t")
    there = Locations(tmp_path / "b", tmp_path / "cb", tmp_path / "u")
    node0 = plans_for("8b", here, Rendezvous(node_rank=0))
    node5 = plans_for("8b", there, Rendezvous(node_rank=5, master_addr="h0"))
    assert matrix_fingerprint(node0) == matrix_fingerprint(node5)
    assert matrix_fingerprint(node0) != matrix_fingerprint(plans_for("8b", here, steps=50))
    assert len({p.fingerprint for p in node0}) == 6


def test_trace_dir_moves_every_ranks_traces_and_nothing_computed(tmp_path):
    """--trace-dir: an absolute `--profiling.save_traces_folder`, which torchtitan's os.path.join(dump_folder,
    folder) takes over the dump folder; per run and config, parsed by torchtitan's own ConfigManager."""
    pytest.importorskip("torchtitan")
    moved = Locations(tmp_path / "results" / "r1", tmp_path / "cache", tmp_path / "tt", trace_root=tmp_path / "local")
    plans = plans_for("8b", moved)
    for plan in plans:
        folder = flag_value(plan.torchtitan_args, "--profiling.save_traces_folder")
        assert folder == str(tmp_path / "local" / "r1" / "llama3_8b" / plan.config)
        dump = flag_value(plan.torchtitan_args, "--job.dump_folder")
        assert os.path.join(dump, folder) == folder  # torchtitan's join at the pin
    validate_with_torchtitan(plans)
    default = plans_for("8b", Locations(tmp_path / "results" / "r1", tmp_path / "cache", tmp_path / "tt"))
    assert matrix_fingerprint(plans) == matrix_fingerprint(default)
    assert all(flag_value(p.torchtitan_args, "--profiling.save_traces_folder") is None for p in default)
    unprofiled = plans_for("8b", moved, profiling=False)
    assert all(flag_value(p.torchtitan_args, "--profiling.save_traces_folder") is None for p in unprofiled)


def _checkout(root: Path, tokenizer_line: str = 'tokenizer_path = "./assets/tokenizer/original/tokenizer.model"'):
    toml = root / TRAIN_CONFIG.format("llama3_8b")
    toml.parent.mkdir(parents=True, exist_ok=True)
    toml.write_text(f'[model]\nname = "llama3"\nflavor = "8B"\n{tokenizer_line}\n')
    return root


# (files present in the torchtitan dir, extra torchtitan flag, expected error or None)
LAUNCH_FILE_CASES = [
    ("nothing", None, "no torchtitan/models/llama3/train_configs/llama3_8b.toml under"),
    ("toml only", None, "assets/tokenizer/original/tokenizer.model: stage it first"),
    ("toml and tokenizer", None, None),
    ("toml and tokenizer", "--model.tokenizer_path=./elsewhere/tokenizer.model", "elsewhere/tokenizer.model"),
]


@pytest.mark.torchtitan
@pytest.mark.parametrize(("present", "flag", "error"), LAUNCH_FILE_CASES)
def test_launch_files_are_checked_before_torchrun_starts(tmp_path, present, flag, error):
    pytest.importorskip("torchtitan.config_manager")
    root = tmp_path / "torchtitan"
    if present != "nothing":
        _checkout(root)
    if present == "toml and tokenizer":
        tokenizer = root / "assets/tokenizer/original/tokenizer.model"
        tokenizer.parent.mkdir(parents=True)
        tokenizer.write_text("IQ== 0\n")
    plans = plans_for("8b", Locations(tmp_path / "run", tmp_path / "cache", root))[:1]
    if flag:
        plans[0].torchtitan_args.append(flag)
    if error is None:
        toml = root / TRAIN_CONFIG.format("llama3_8b")
        assert validate_with_torchtitan(plans, launching=True) == [f"llama3_8b/vanilla-bf16: parsed with {toml}"]
    else:
        with pytest.raises(TitanbenchError, match=re.escape(error)):
            validate_with_torchtitan(plans, launching=True)
    # `plan` and the image's self-check parse the same flags without needing the files.
    assert len(validate_with_torchtitan(plans)) == 1


# ---- devices: the smoke on CPU ----------------------------------------------------------------------


def smoke_plans(locations: Locations, device: str, **overrides):
    return build_plan([load_spec("smoke")], Overrides(**overrides), Rendezvous(), locations, device=device)


def test_published_matrices_refuse_cpu_with_the_reason(locations):
    with pytest.raises(TitanbenchError, match=r"llama3_70b runs on CUDA GPUs only: .* --model smoke --device cpu"):
        build_plan(resolve_models("70b"), Overrides(), Rendezvous(), locations, device="cpu")


def test_all_means_the_published_matrices_not_the_smoke():
    assert [spec.model for spec in resolve_models("all")] == ["llama3_70b", "llama3_8b"]


def test_smoke_on_cpu_runs_torchtitan_through_the_cpu_launcher_with_its_substitutions(locations):
    plans = {p.config: p for p in smoke_plans(locations, "cpu")}
    vanilla, async_f8 = plans["vanilla-bf16"], plans["async-float8_tensorwise"]
    assert vanilla.topology.model_dump() == {"nodes": 1, "gpus_per_node": 4, "tp": 2, "fsdp": 2}
    assert vanilla.launcher_argv[vanilla.launcher_argv.index("-m") + 1] == "titanbench.cpu_trainer"
    assert vanilla.checks_torchtitan and vanilla.deviations == []
    assert "TITANBENCH_CPU_SUBSTITUTIONS" not in vanilla.env
    assert async_f8.env["TITANBENCH_CPU_SUBSTITUTIONS"] == (
        "float8-capability-gate,float8-all-gather-as-uint8,symm-mem-reference-ops"
    )
    assert [d.split(":")[0] for d in async_f8.deviations] == [
        "CPU substitution float8-capability-gate",
        "CPU substitution float8-all-gather-as-uint8",
        "CPU substitution symm-mem-reference-ops",
    ]
    # No Triton on CPU; inductor's precompiled headers follow TMPDIR into the config's own cache.
    assert "TRITON_CACHE_DIR" not in vanilla.env
    assert vanilla.env["TMPDIR"] == str(locations.cache_root / "smoke" / "vanilla-bf16" / "tmp")
    assert vanilla.make_dirs == [vanilla.env["TMPDIR"]]
    assert vanilla.env["HF_HUB_OFFLINE"] == "1"
    skipped = {c for c, p in plans.items() if p.skip_reason}
    assert skipped == {"vanilla-float8_rowwise", "async-float8_rowwise"}
    assert "row-wise" in plans["async-float8_rowwise"].skip_reason


def test_smoke_on_cuda_is_the_stock_trainer_on_one_8_gpu_node_with_nothing_substituted(locations):
    plans = smoke_plans(locations, "cuda")
    assert {p.trainer for p in plans} == {"torchtitan.train"}
    assert plans[0].topology.model_dump() == {"nodes": 1, "gpus_per_node": 8, "tp": 2, "fsdp": 4}
    assert not any(p.skip_reason or p.deviations or "TITANBENCH_CPU_SUBSTITUTIONS" in p.env for p in plans)
    assert plans[0].env["TRITON_CACHE_DIR"].endswith("smoke/vanilla-bf16/triton")


def test_the_device_is_part_of_the_fingerprint(locations):
    cpu, cuda = smoke_plans(locations, "cpu", gpus_per_node=8), smoke_plans(locations, "cuda")
    assert cpu[0].topology == cuda[0].topology and cpu[0].fingerprint != cuda[0].fingerprint


def test_torchtitan_arguments_come_in_the_documented_order(locations):
    """toml, the published flags in their published order (an override in place), then the bundle's."""
    plan = next(p for p in plans_for("70b", locations, steps=7) if p.config == "async-float8_rowwise")
    published = [*shlex.split(PUBLISHED_COMMON["llama3_70b"]), "--training.steps=7"]
    published += [*shlex.split(QUANT_FLAGS["float8_rowwise"]), ASYNC]
    bundle = [b["flag"] for b in plan.bundle_flags]
    assert plan.torchtitan_args == ["--job.config_file", TRAIN_CONFIG.format("llama3_70b"), *published, *bundle]


def test_auto_device_asks_torch_only_when_the_answer_could_be_cpu(monkeypatch):
    from titanbench import options

    def no_probe():
        raise AssertionError("torch probed for a CUDA-only matrix")

    monkeypatch.setattr(options, "torch_sees_gpu", no_probe)
    assert options.resolve_device("auto", resolve_models("all")) == "cuda"
    monkeypatch.setattr(options, "torch_sees_gpu", lambda: False)
    assert options.resolve_device("auto", [load_spec("smoke")]) == "cpu"
    monkeypatch.setattr(options, "torch_sees_gpu", lambda: True)
    assert options.resolve_device("auto", [load_spec("smoke")]) == "cuda"


def test_multi_node_gpu_configs_log_nccls_network_choice_with_the_reason(locations):
    for plan in plans_for("70b", locations):
        assert (plan.env["NCCL_DEBUG"], plan.env["NCCL_DEBUG_SUBSYS"]) == ("INFO", "INIT,NET")
        assert "network it chose" in plan.env_reasons["NCCL_DEBUG"]
        assert plan.checks_transport
    # One node has no network between nodes to prove; the CPU smoke talks gloo, not NCCL.
    for plan in [*plans_for("8b", locations, nodes=1, tp=4), *smoke_plans(locations, "cpu", nodes=2)]:
        assert "NCCL_DEBUG" not in plan.env and not plan.checks_transport


def test_only_a_local_dataset_copy_sets_the_hub_offline(locations):
    [remote] = plans_for("70b", locations, dataset_path="https://mirror.example/c4")[:1]
    assert "--training.dataset_path=https://mirror.example/c4" in remote.torchtitan_args
    assert "HF_HUB_OFFLINE" not in remote.env and remote.env["HF_HUB_DOWNLOAD_TIMEOUT"]
