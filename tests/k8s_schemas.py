"""Check rendered Kubernetes objects the way a cluster would, offline.

Custom resources are checked against the `openAPIV3Schema` of their real CRD (tests/data/schemas/),
made strict the way the API server treats a structural schema under `kubectl`'s default strict field
validation: a field the schema does not list is an error. Core objects go to the Kubernetes OpenAPI
schema through `kubernetes-validate` (strict). CEL rules (`x-kubernetes-validations`) are not run.
"""

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

SCHEMAS = Path(__file__).parent / "data" / "schemas"
CRD_FILES = ("trainer.kubeflow.org_trainjobs.yaml", "jobset.x-k8s.io_jobsets.yaml")
DEFAULT_RUNTIME = SCHEMAS / "example-runtime-torch_distributed.yaml"


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@cache
def _crd_validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    validators = {}
    for name in CRD_FILES:
        crd = yaml.safe_load((SCHEMAS / name).read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return validators


def validate_custom(obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError if `obj` breaks its CRD's schema."""
    validator = _crd_validators()[(obj["apiVersion"], obj["kind"])]
    validator.validate(obj)


def validate_core(obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError if `obj` breaks the Kubernetes OpenAPI schema."""
    kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def jobset_job(jobset: dict[str, Any], index: int = 0) -> dict[str, Any]:
    """The batch/v1 Job the JobSet controller creates for one replicated job."""
    replicated = jobset["spec"]["replicatedJobs"][index]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{jobset['metadata']['name']}-{replicated['name']}-0"},
        "spec": copy.deepcopy(replicated["template"]["spec"]),
    }


def _merge_named(base: list[dict[str, Any]], patch: list[dict[str, Any]], key: str = "name") -> list[dict[str, Any]]:
    merged = {item[key]: copy.deepcopy(item) for item in base}
    for item in patch:
        merged.setdefault(item[key], {}).update(copy.deepcopy(item))
    return list(merged.values())


def trainjob_pod(trainjob: dict[str, Any], runtime: dict[str, Any]) -> dict[str, Any]:
    """The v1 Pod of one node as Kubeflow Trainer builds it: the runtime's pod template, the TrainJob's
    `trainer` on the trainer container (named `node` in the torch runtimes), then `runtimePatches`."""
    spec = trainjob["spec"]
    runtime_job = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]
    pod_template = runtime_job["template"]["spec"]["template"]
    pod_spec = copy.deepcopy(pod_template["spec"])
    annotations = dict(pod_template.get("metadata", {}).get("annotations", {}))
    trainer = spec["trainer"]
    for container in pod_spec["containers"]:
        if container["name"] == "node":
            container.update(image=trainer["image"], command=trainer["command"], env=trainer.get("env", []))
            container["resources"] = trainer["resourcesPerNode"]
    for patch in spec.get("runtimePatches", []):
        for job_patch in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            if job_patch["name"] != runtime_job["name"]:
                continue
            template_patch = job_patch["template"]["spec"]["template"]
            annotations.update(template_patch.get("metadata", {}).get("annotations", {}))
            pod_patch = template_patch["spec"]
            pod_spec["containers"] = _merge_named(pod_spec["containers"], pod_patch.get("containers", []))
            pod_spec["volumes"] = _merge_named(pod_spec.get("volumes", []), pod_patch.get("volumes", []))
            if "nodeSelector" in pod_patch:
                pod_spec["nodeSelector"] = {**pod_spec.get("nodeSelector", {}), **pod_patch["nodeSelector"]}
            pod_spec["tolerations"] = pod_spec.get("tolerations", []) + pod_patch.get("tolerations", [])
    pod_spec["restartPolicy"] = "Never"
    metadata: dict[str, Any] = {"name": f"{trainjob['metadata']['name']}-node-0-0"}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def default_runtime() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_RUNTIME.read_text())
