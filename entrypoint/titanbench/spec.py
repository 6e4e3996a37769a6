"""Matrix specs (`runs/*.yaml`): load, validate, resolve `--model`.

A spec is data: the published topology, the published flags verbatim, six configs and their
published numbers. Validation fails with the file, the key path and what is wrong.
"""

import shlex
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveInt, ValidationError, model_validator

from titanbench.errors import TitanbenchError
from titanbench.paths import runs_dir

ASYNC_TP_FLAG = "--parallelism.enable_async_tensor_parallel"
TP_DEGREE_FLAG = "--parallelism.tensor_parallel_degree"
STEPS_FLAG = "--training.steps"
FLOAT8_FLAG = "--model.converters=float8"
ROWWISE_FLAG = "--float8.recipe_name=rowwise"
SEQ_LEN_FLAGS = ("--training.seq_len", "--training.seq-len")

# Bounds on what a spec or an override may ask for: far beyond any real run, so a typo such as 1e21
# steps or 10^20 nodes is an error, not an overflow or a plan that hangs.
MAX_NODES = 100_000
MAX_GPUS_PER_NODE = 1_024
MAX_STEPS = 100_000_000
# A spec file is a few KB: a huge one is a mistake (and would stall the YAML loader).
MAX_SPEC_BYTES = 1_000_000

# A GPU power limit this close to a spec's `hardware.power_limit_w` counts as the same (doctor, report).
POWER_TOLERANCE_W = 5.0

Device = Literal["cuda", "cpu"]
DEVICES: tuple[Device, ...] = ("cuda", "cpu")
TpType = Literal["vanilla", "async"]
Quantization = Literal["bf16", "float8_tensorwise", "float8_rowwise"]
QUANTIZATIONS: tuple[Quantization, ...] = ("bf16", "float8_tensorwise", "float8_rowwise")
# How reports and charts name them, in the published table's words.
TP_LABELS = {"vanilla": "Vanilla TP", "async": "Async TP"}
QUANTIZATION_LABELS = {
    "bf16": "None (bfloat16)",
    "float8_tensorwise": "float8 tensorwise",
    "float8_rowwise": "float8 rowwise",
}


def split_flags(flags: str) -> list[str]:
    """Shell words of a published command fragment: `--a.b="x"` becomes the argv item `--a.b=x`."""
    try:
        return shlex.split(flags)
    except ValueError as error:
        raise ValueError(f"cannot split {flags!r} into shell words: {error}") from None


def flag_value(args: list[str], name: str) -> str | None:
    """The value of `name=value` in args (the last one wins, as in torchtitan's parser)."""
    values = [arg.split("=", 1)[1] for arg in args if arg.startswith(name + "=")]
    return values[-1] if values else None


def _splittable(flags: str) -> str:
    """Every word must be `--name=value` or a bare boolean `--name`: a value after a space would slip
    past every check that reads `name=value` (torchtitan would run it; titanbench would not see it)."""
    words = split_flags(flags)
    for before, word in zip(["", *words], words, strict=False):
        if not word.startswith("--"):
            raise ValueError(f"{word!r} after {before or 'nothing'}: write each flag as --name=value (no space form)")
    return flags


# A fragment of a published command line, kept verbatim; it must split into shell words.
ShellFlags = Annotated[str, AfterValidator(_splittable)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Topology(_Strict):
    nodes: int = Field(ge=1, le=MAX_NODES)
    gpus_per_node: int = Field(ge=1, le=MAX_GPUS_PER_NODE)
    tp: int = Field(ge=1, le=MAX_GPUS_PER_NODE)
    fsdp: int = Field(ge=1, le=MAX_NODES * MAX_GPUS_PER_NODE)

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node

    @model_validator(mode="after")
    def _degrees_cover_world(self) -> "Topology":
        if self.tp * self.fsdp != self.world:
            raise ValueError(f"tp x fsdp = {self.tp * self.fsdp} but nodes x gpus_per_node = {self.world}")
        return self


class Heading(_Strict):
    gpu: str
    activation_checkpointing: str
    local_batch_size: PositiveInt


class CpuConfig(_Strict):
    """How one config runs on CPU: named substitutions (each a deviation), or why it cannot run there."""

    substitutions: list[str] = []
    skip: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _known(self) -> "CpuConfig":
        from titanbench.cpu_trainer import SUBSTITUTIONS

        unknown = [name for name in self.substitutions if name not in SUBSTITUTIONS]
        if unknown:
            raise ValueError(f"unknown CPU substitution(s) {', '.join(unknown)} (known: {', '.join(SUBSTITUTIONS)})")
        return self


class CpuRun(_Strict):
    """A matrix that also runs on CPU (the smoke): processes stand in for the GPUs of a node."""

    processes_per_node: PositiveInt


class ConfigSpec(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    tp_type: TpType
    quantization: Quantization
    steps: int = Field(ge=1, le=MAX_STEPS)
    published_tps: float | None = Field(default=None, gt=0)
    flags: ShellFlags = ""
    cpu: CpuConfig = CpuConfig()

    @property
    def flag_list(self) -> list[str]:
        return split_flags(self.flags)

    @model_validator(mode="after")
    def _flags_match_labels(self) -> "ConfigSpec":
        """The labels (tp_type, quantization) are what the report shows: they must be what the flags do."""
        args = self.flag_list
        if (ASYNC_TP_FLAG in args) != (self.tp_type == "async"):
            raise ValueError(f"tp_type {self.tp_type!r} disagrees with the flags (async TP is {ASYNC_TP_FLAG})")
        float8 = FLOAT8_FLAG in args
        rowwise = ROWWISE_FLAG in args
        implied = "float8_rowwise" if float8 and rowwise else "float8_tensorwise" if float8 else "bf16"
        if (rowwise and not float8) or implied != self.quantization:
            raise ValueError(f"quantization {self.quantization!r} disagrees with the flags (they say {implied!r})")
        if flag_value(args, STEPS_FLAG) is not None:
            raise ValueError(f"flags must not set {STEPS_FLAG}: use the `steps` key")
        return self


class MatrixSpec(_Strict):
    model: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    aliases: list[str] = []
    title: str
    params: float = Field(gt=0, description="parameter count, for the memory guard")
    train_config: str
    topology: Topology
    heading: Heading
    common_flags: ShellFlags
    # The train-config toml's [training] seq_len (or the flags' where they set it): for `plan`'s cost
    # estimate when the toml is not at hand. Checked against the flags when they set it.
    seq_len: PositiveInt | None = None
    hardware: dict[str, str | int | float] = {}
    # Absent: CUDA only (the published matrices).
    cpu: CpuRun | None = None
    configs: list[ConfigSpec] = Field(min_length=1)

    @property
    def published(self) -> bool:
        return any(config.published_tps for config in self.configs)

    @property
    def devices(self) -> tuple[Device, ...]:
        return DEVICES if self.cpu else ("cuda",)

    def reference_topology(self, device: Device) -> Topology:
        """The spec's own topology on `device`: on CPU, processes stand in for the GPUs of a node."""
        if device == "cpu" and self.cpu:
            per_node = self.cpu.processes_per_node
            world = self.topology.nodes * per_node
            return Topology(
                nodes=self.topology.nodes, gpus_per_node=per_node, tp=self.topology.tp, fsdp=world // self.topology.tp
            )
        return self.topology

    @property
    def common_flag_list(self) -> list[str]:
        return split_flags(self.common_flags)

    def config(self, config_id: str) -> ConfigSpec:
        for config in self.configs:
            if config.id == config_id:
                return config
        known = ", ".join(c.id for c in self.configs)
        raise TitanbenchError(f"{self.model} has no config {config_id!r} (known: {known})")

    @model_validator(mode="after")
    def _consistent(self) -> "MatrixSpec":
        ids = [c.id for c in self.configs]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate config ids: {', '.join(duplicates)}")
        cells = [(c.tp_type, c.quantization) for c in self.configs]
        repeated = sorted({f"{t} {q}" for t, q in cells if cells.count((t, q)) > 1})
        if repeated:
            raise ValueError(
                f"two configs for one table cell ({', '.join(repeated)}): the report could not tell them apart"
            )
        if self.cpu:
            per_node = self.cpu.processes_per_node
            if per_node % self.topology.tp:
                raise ValueError(
                    f"cpu.processes_per_node {per_node} is not a multiple of topology.tp {self.topology.tp}"
                )
        elif any(c.cpu != CpuConfig() for c in self.configs):
            raise ValueError("configs set `cpu` but the matrix has no `cpu` section (it runs on CUDA only)")
        args = self.common_flag_list
        tp = flag_value(args, TP_DEGREE_FLAG)
        if tp != str(self.topology.tp):
            raise ValueError(f"common_flags set {TP_DEGREE_FLAG}={tp} but topology.tp is {self.topology.tp}")
        if flag_value(args, STEPS_FLAG) is not None:
            raise ValueError(f"common_flags must not set {STEPS_FLAG}: steps are per config")
        for config in self.configs:
            for name in SEQ_LEN_FLAGS:
                value = flag_value([*args, *config.flag_list], name)
                if value is not None and self.seq_len is not None and value != str(self.seq_len):
                    raise ValueError(f"seq_len is {self.seq_len} but {config.id}'s flags run {name}={value}")
        batch = flag_value(args, "--training.local-batch-size") or flag_value(args, "--training.local_batch_size")
        if batch is not None and batch != str(self.heading.local_batch_size):
            raise ValueError(
                f"heading.local_batch_size is {self.heading.local_batch_size} but common_flags run {batch}: "
                "the report heading must say what ran"
            )
        return self


def describe_error(error: ValidationError) -> str:
    """Every problem of a validation error on one line: `key.path: what is wrong; ...`."""
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        problems.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def load_spec_file(path: Path) -> MatrixSpec:
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise TitanbenchError(f"{path}: a spec is a few KB; this one is over {MAX_SPEC_BYTES:,} bytes")
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise TitanbenchError(f"{path}: cannot read spec: {error.strerror}") from None
    except UnicodeDecodeError:
        raise TitanbenchError(f"{path}: a spec must be UTF-8 text") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise TitanbenchError(f"{path}: malformed YAML{where}: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise TitanbenchError(f"{path}: a spec must be a YAML mapping, got {type(data).__name__}")
    try:
        return MatrixSpec.model_validate(data)
    except ValidationError as error:
        raise TitanbenchError(f"{path}: invalid spec: {describe_error(error)}") from None


def builtin_spec_files() -> list[Path]:
    return sorted(runs_dir().glob("*.yaml"))


def load_spec(ref: str) -> MatrixSpec:
    """`ref` is a model id, an alias, or a path to a spec file."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise TitanbenchError(f"{ref}: no such spec file")
        return load_spec_file(path)
    specs = [load_spec_file(p) for p in builtin_spec_files()]
    for spec in specs:
        if ref == spec.model or ref in spec.aliases:
            return spec
    known = ", ".join(name for s in specs for name in [s.model, *s.aliases])
    raise TitanbenchError(f"unknown model {ref!r}: use one of {known}, all, or a path to a spec file")


def resolve_models(ref: str) -> list[MatrixSpec]:
    """`--model`: `all` (the published matrices: every built-in one with published numbers), an id, an
    alias or a spec path."""
    if ref == "all":
        return [spec for spec in map(load_spec_file, builtin_spec_files()) if spec.published]
    return [load_spec(ref)]
