"""`titanbench deploy k8s`: TrainJob and JobSet manifests, checked against the real schemas, and the
node rank each pod finds in the environment its controller injects."""

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from k8s_schemas import default_runtime, jobset_job, trainjob_pod, validate_core, validate_custom
from titanbench.commands.deploy import deploy
from titanbench.commands.run import run
from titanbench.container import image_reference
from titanbench.deploy import CONTAINER_COMPILE_CACHE, CONTAINER_HF_HOME, NODE_LOCAL_COMPILE_CACHE, target
from titanbench.deploy.k8s import (
    COMPLETION_INDEX_ANNOTATION,
    MULTUS_ANNOTATION,
    RUNTIME_CONTAINER,
    RUNTIME_JOB,
    TORCH_RUNTIME,
    K8sOptions,
    manifest,
)
from titanbench.nodes import Explicit, discover_placement

IMAGE = "registry.example/titanbench:test"
MODELS = ("llama3_8b", "llama3_70b")
# Kubeflow Trainer's torch plugin: the port it puts in PET_MASTER_PORT.
TRAINER_MASTER_PORT = "29400"


def render(model: str, flavor: str, **options) -> dict:
    return manifest(target(model, options.pop("nodes", None)), K8sOptions(image=IMAGE, flavor=flavor, **options))


def pod_spec(obj: dict) -> dict:
    if obj["kind"] == "JobSet":
        return jobset_job(obj)["spec"]["template"]["spec"]
    return trainjob_pod(obj, default_runtime())["spec"]


def pod_annotations(obj: dict) -> dict:
    if obj["kind"] == "JobSet":
        return jobset_job(obj)["spec"]["template"].get("metadata", {}).get("annotations", {})
    return trainjob_pod(obj, default_runtime())["metadata"].get("annotations", {})


def validate(obj: dict) -> None:
    validate_custom(obj)
    validate_core(jobset_job(obj) if obj["kind"] == "JobSet" else trainjob_pod(obj, default_runtime()))


def main_container(obj: dict) -> dict:
    containers = pod_spec(obj)["containers"]
    assert len(containers) == 1
    return containers[0]


def run_request(command: list[str]) -> tuple[Explicit, int]:
    """What `titanbench run` makes of the command line: its explicit topology flags and --nodes."""
    assert command[:2] == ["titanbench", "run"]
    params = run.make_context("run", list(command[2:])).params
    return Explicit(params["node_rank"], params["master_addr"], params["master_port"]), params["nodes"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("flavor", ["trainjob", "jobset"])
def test_manifest_validates_against_its_crd_and_the_core_schema(model, flavor):
    obj = render(model, flavor, rdma_resource="rdma/ib")
    validate_custom(obj)
    if flavor == "jobset":
        validate_core(jobset_job(obj))
    else:
        validate_core(trainjob_pod(obj, default_runtime()))
    name = obj["metadata"]["name"]
    # The TrainJob CRD's CEL rule and JobSet's pod host names: a DNS-1035 label of at most 63.
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63


@pytest.mark.parametrize("flavor", ["trainjob", "jobset"])
def test_one_pod_per_node_with_all_its_gpus_shm_ipc_lock_and_the_results_claim(flavor):
    obj = render("llama3_70b", flavor, results_pvc="bench-data")
    if flavor == "trainjob":
        assert obj["spec"]["trainer"]["numNodes"] == 32
    else:
        job = jobset_job(obj)["spec"]
        assert (job["parallelism"], job["completions"], job["completionMode"]) == (32, 32, "Indexed")
        assert [r["replicas"] for r in obj["spec"]["replicatedJobs"]] == [1]
    container, spec = main_container(obj), pod_spec(obj)
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 8}
    assert "IPC_LOCK" in container["securityContext"]["capabilities"]["add"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"] == {"medium": "Memory"}
    assert volumes[mounts["/results"]["name"]]["persistentVolumeClaim"] == {"claimName": "bench-data"}
    assert container["command"][:2] == ["titanbench", "run"]
    assert container["command"][container["command"].index("--results") + 1] == "/results"


@pytest.mark.parametrize("flavor", ["trainjob", "jobset"])
def test_rdma_resource_only_when_given(flavor):
    assert "rdma/ib" not in main_container(render("llama3_8b", flavor))["resources"]["limits"]
    resources = main_container(render("llama3_8b", flavor, rdma_resource="rdma/ib=2"))["resources"]
    assert resources["limits"]["rdma/ib"] == resources["requests"]["rdma/ib"] == 2


@pytest.mark.parametrize("flavor", ["trainjob", "jobset"])
def test_hf_token_comes_from_a_secret_and_no_secret_is_a_literal(flavor, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue123")
    obj = render("llama3_8b", flavor, hf_secret="my-hf")
    env = {e["name"]: e for e in main_container(obj)["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "my-hf"
    assert "value" not in env["HF_TOKEN"]
    assert "hf_secretvalue123" not in yaml.safe_dump(obj)


def test_host_network_puts_jobset_pods_on_the_host_with_cluster_dns():
    obj = render("llama3_70b", "jobset", host_network=True, rdma_resource="rdma/rdma_shared_device_a=1")
    validate(obj)
    assert (pod_spec(obj)["hostNetwork"], pod_spec(obj)["dnsPolicy"]) == (True, "ClusterFirstWithHostNet")
    assert "hostNetwork" not in pod_spec(render("llama3_70b", "jobset"))


def test_host_network_is_refused_for_a_trainjob_whose_patches_cannot_set_it():
    result = invoke("--model", "8b", "--flavor", "trainjob", "--image", IMAGE, "--host-network")
    assert result.exit_code == 1 and "--host-network needs --flavor jobset" in result.output
    assert "kind:" not in result.output


@pytest.mark.parametrize("flavor", ["trainjob", "jobset"])
def test_secondary_networks_node_selector_and_tolerations_reach_the_pods(flavor):
    networks = '[{"name": "roce-net", "interface": "net1"}]'
    selector = ("nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3",)
    tolerations = ("nvidia.com/gpu:NoSchedule", "dedicated=bench:NoExecute", "spot")
    obj = render("llama3_8b", flavor, network_annotation=networks, node_selector=selector, tolerations=tolerations)
    validate(obj)
    assert pod_annotations(obj)[MULTUS_ANNOTATION] == networks
    spec = pod_spec(obj)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert spec["tolerations"][-3:] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "bench", "effect": "NoExecute"},
        {"key": "spot", "operator": "Exists"},
    ]
    plain = render("llama3_8b", flavor)
    assert MULTUS_ANNOTATION not in pod_annotations(plain) and "nodeSelector" not in pod_spec(plain)


@pytest.mark.parametrize("flavor", ["trainjob", "jobset"])
def test_extra_extended_resources_are_requested_and_limited(flavor):
    obj = render("llama3_8b", flavor, rdma_resource="rdma/ib", resources=("example.com/vf=2",))
    validate(obj)
    resources = main_container(obj)["resources"]
    assert resources["limits"] == resources["requests"] == {"nvidia.com/gpu": 8, "rdma/ib": 1, "example.com/vf": 2}


@pytest.mark.parametrize("flavor", ["trainjob", "jobset"])
def test_caches_are_named_hf_on_the_claim_compile_per_node_unless_shared(flavor):
    container = main_container(render("llama3_8b", flavor))
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HF_HOME"] == CONTAINER_HF_HOME
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert any(CONTAINER_HF_HOME.startswith(path + "/") for path in mounts)  # on the shared claim
    command = container["command"]
    assert command[command.index("--cache-dir") + 1] == NODE_LOCAL_COMPILE_CACHE
    assert not any(NODE_LOCAL_COMPILE_CACHE.startswith(path + "/") for path in mounts)  # not on the claim
    shared = main_container(render("llama3_8b", flavor, compile_cache="shared"))["command"]
    assert shared[shared.index("--cache-dir") + 1] == CONTAINER_COMPILE_CACHE


def test_the_trainjob_header_states_the_trainer_it_needs_and_the_tested_crd_has_it():
    text = invoke("--model", "8b", "--flavor", "trainjob", "--image", IMAGE).output
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("spec.runtimePatches" in line for line in header)
    assert any("podTemplateOverrides" in line for line in header)
    assert not any(
        "runtimePatches" in line for line in invoke("--model", "8b", "--flavor", "jobset").output.splitlines()
    )
    crd = yaml.safe_load(
        (Path(__file__).parent / "data" / "schemas" / "trainer.kubeflow.org_trainjobs.yaml").read_text()
    )
    fields = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert "runtimePatches" in fields and "podTemplateOverrides" not in fields


def test_trainjob_patches_address_the_default_runtime():
    """runtimePatches name a replicated job and a container; both must exist in `torch-distributed`."""
    runtime = default_runtime()
    assert runtime["metadata"]["name"] == TORCH_RUNTIME
    job = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]
    assert job["name"] == RUNTIME_JOB
    assert RUNTIME_CONTAINER in [c["name"] for c in job["template"]["spec"]["template"]["spec"]["containers"]]
    obj = render("llama3_8b", "trainjob")
    assert obj["spec"]["runtimeRef"]["name"] == TORCH_RUNTIME
    container = main_container(obj)
    assert container["image"] == IMAGE
    assert any(m["mountPath"] == "/dev/shm" for m in container["volumeMounts"])


def test_trainjob_node_rank_from_the_pet_variables_trainer_injects():
    obj = render("llama3_8b", "trainjob", nodes=4)
    trainer, name = obj["spec"]["trainer"], obj["metadata"]["name"]
    explicit, nodes = run_request(trainer["command"])
    # The manifest leaves node rank, node 0 and the port to what the controller injects.
    assert explicit == Explicit()
    for rank in range(trainer["numNodes"]):
        env = {
            "PET_NNODES": str(trainer["numNodes"]),
            "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
            "PET_NODE_RANK": str(rank),
            "PET_MASTER_ADDR": f"{name}-{RUNTIME_JOB}-0-0.{name}",
            "PET_MASTER_PORT": TRAINER_MASTER_PORT,
        }
        topology = discover_placement(env, explicit, nodes)
        assert (topology.nnodes, topology.node_rank) == (4, rank)
        assert (topology.master_addr, topology.master_port) == (f"{name}-node-0-0.{name}", int(TRAINER_MASTER_PORT))
        assert topology.source.startswith("Kubeflow")


def _kubelet_env(container: dict, annotations: dict[str, str]) -> dict[str, str]:
    """The container's env as the kubelet resolves it (literal values and pod-annotation fieldRefs)."""
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "fieldRef" in item.get("valueFrom", {}):
            key = re.fullmatch(r"metadata\.annotations\['(.+)'\]", item["valueFrom"]["fieldRef"]["fieldPath"])
            assert key, item
            env[item["name"]] = annotations[key.group(1)]
    return env


def test_jobset_node_rank_from_the_completion_index_and_node_zero_from_stable_dns():
    obj = render("llama3_8b", "jobset", nodes=3)
    name = obj["metadata"]["name"]
    replicated = obj["spec"]["replicatedJobs"][0]
    subdomain = obj["spec"]["network"]["subdomain"]
    assert obj["spec"]["network"]["enableDNSHostnames"] is True
    # JobSet names pod <jobset>-<replicatedJob>-<jobIndex>-<podIndex> in the JobSet's subdomain.
    node0 = f"{name}-{replicated['name']}-0-0.{subdomain}"
    container = main_container(obj)
    explicit, nodes = run_request(container["command"])
    for index in range(nodes):
        env = _kubelet_env(container, {COMPLETION_INDEX_ANNOTATION: str(index)})
        assert env["MASTER_ADDR"] == node0
        topology = discover_placement(env, explicit, nodes)
        assert (topology.nnodes, topology.node_rank, topology.master_addr) == (3, index, node0)
        assert topology.source.startswith("JobSet")


def test_extra_run_arguments_follow_the_command():
    obj = manifest(target("8b", 2), K8sOptions(image=IMAGE, flavor="jobset", extra=("--steps", "20")))
    command = main_container(obj)["command"]
    assert command[-2:] == ["--steps", "20"]
    assert command[command.index("--model") + 1] == "llama3_8b"


# A broken manifest must fail: proof that each validator bites.
def _broken_trainjob_nodes(obj):
    obj["spec"]["trainer"]["numNodes"] = "eight"


def _broken_trainjob_unknown_field(obj):
    obj["spec"]["trainer"]["gpus"] = 8


def _broken_trainjob_patch_without_manager(obj):
    del obj["spec"]["runtimePatches"][0]["manager"]


def _broken_jobset_without_job_name(obj):
    del obj["spec"]["replicatedJobs"][0]["name"]


def _broken_jobset_misspelled_field(obj):
    obj["spec"]["replicatedJobs"][0]["template"]["spec"]["paralelism"] = 2


@pytest.mark.parametrize(
    ("flavor", "breakage"),
    [
        ("trainjob", _broken_trainjob_nodes),
        ("trainjob", _broken_trainjob_unknown_field),
        ("trainjob", _broken_trainjob_patch_without_manager),
        ("jobset", _broken_jobset_without_job_name),
        ("jobset", _broken_jobset_misspelled_field),
    ],
)
def test_crd_validation_rejects_a_broken_manifest(flavor, breakage):
    obj = copy.deepcopy(render("llama3_8b", flavor))
    breakage(obj)
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(obj)


def test_core_validation_rejects_a_broken_pod():
    job = jobset_job(render("llama3_8b", "jobset"))
    job["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["medium"] = {"memory": True}
    with pytest.raises(jsonschema.ValidationError):
        validate_core(job)
    pod = trainjob_pod(render("llama3_8b", "trainjob"), default_runtime())
    del pod["spec"]["containers"][0]["name"]
    with pytest.raises(jsonschema.ValidationError):
        validate_core(pod)


def invoke(*args: str):
    return CliRunner().invoke(deploy, ["k8s", *args])


def test_cli_writes_the_manifest_with_its_command_line(tmp_path):
    out = tmp_path / "job.yaml"
    result = invoke("--model", "8b", "--flavor", "jobset", "--image", IMAGE, "--namespace", "ml", "--out", str(out))
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith("# Rendered by: titanbench deploy k8s --model 8b --flavor jobset")
    obj = yaml.safe_load(text)
    validate_custom(obj)
    assert obj["metadata"]["namespace"] == "ml"


def test_cli_defaults_to_the_image_built_from_the_pins(monkeypatch):
    monkeypatch.delenv("TITANBENCH_IMAGE", raising=False)
    result = invoke("--model", "8b", "--flavor", "trainjob")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["spec"]["trainer"]["image"] == image_reference()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "all", "--flavor", "jobset"], "one model per launch file"),
        (["--model", "nope", "--flavor", "jobset"], "unknown model 'nope'"),
        (["--model", "8b", "--flavor", "jobset", "--namespace", "Bad_NS"], "not a Kubernetes name"),
        (["--model", "8b", "--flavor", "trainjob", "--rdma-resource", "ib"], "extended resource name"),
        (["--model", "8b", "--flavor", "trainjob", "--rdma-resource", "rdma/ib=x"], "extended resource name"),
        (["--model", "8b", "--flavor", "mpi"], "'mpi' is not one of"),
        (["--model", "8b", "--flavor", "jobset", "--nodes", "0"], "--nodes"),
        (["--model", "8b", "--flavor", "jobset", "--resource", "rdma/ib"], "NAME=COUNT"),
        (["--model", "8b", "--flavor", "jobset", "--resource", "rdma/ib=0"], "extended resource name"),
        (["--model", "8b", "--flavor", "jobset", "--resource", "nvidia.com/gpu=4"], "model's topology"),
        (["--model", "8b", "--flavor", "jobset", "--rdma-resource", "rdma/ib", "--resource", "rdma/ib=2"], "twice"),
        (["--model", "8b", "--flavor", "jobset", "--node-selector", "gpu"], "--node-selector 'gpu'"),
        (["--model", "8b", "--flavor", "jobset", "--node-selector", "a=b c"], "--node-selector 'a=b c'"),
        (["--model", "8b", "--flavor", "jobset", "--toleration", "gpu:Never"], "EFFECT one of"),
        (["--model", "8b", "--flavor", "jobset", "--toleration", "bad key"], "--toleration 'bad key'"),
        (["--model", "8b", "--flavor", "jobset", "--network-annotation", " "], "--network-annotation"),
        (["--model", "8b", "--flavor", "jobset", "--compile-cache", "nfs"], "'nfs' is not one of"),
    ],
)
def test_cli_bad_input_is_one_error_line(args, message):
    result = invoke("--image", IMAGE, *args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert sum(line.startswith("Error:") for line in result.output.splitlines()) == 1


@pytest.mark.parametrize("image", ["bad image:tag", "reg.example.com/team/x:t@sha256:abc", "x::1", "-leading/dash"])
def test_an_image_reference_kubernetes_could_not_pull_is_refused(image):
    result = invoke("--model", "8b", "--flavor", "jobset", "--image", image)
    assert result.exit_code == 1 and "not an image reference" in result.output and "kind:" not in result.output


@pytest.mark.parametrize(
    "image",
    ["titanbench:1.0-source", "registry.example.com:5000/team/titanbench:TAG", "ghcr.io/o/r@sha256:" + "a" * 64],
)
def test_real_image_references_pass(image):
    assert f"image: {image}" in invoke("--model", "8b", "--flavor", "jobset", "--image", image).output


def test_cli_masks_secret_looking_values_after_the_double_dash(tmp_path):
    """Planted: secrets after `--`, in the manifest's header and in every pod's command."""
    github = "ghp_" + "aB3dE5gH7jK9mN1pQ3rS5tU7wX9yZ1bC3dE5"
    out = tmp_path / "job.yaml"
    result = invoke("--model", "8b", "--flavor", "jobset", "--out", str(out), "--", "--run-id", github, "X_TOKEN=abc12")
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert github not in text and "abc12" not in text
    assert text.startswith(
        "# Rendered by: titanbench deploy k8s --model 8b --flavor jobset -- --run-id '***' 'X_TOKEN=***'"
    )
