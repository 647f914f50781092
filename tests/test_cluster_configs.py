"""The cluster files: Ray's own autoscaler schema, KubeRay's required fields, and one set of
versions (Ray, Python, torch, the image) across the Dockerfile, the YAMLs and the constraints."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
RAY_YAMLS = ("local.yaml", "aws.yaml", "gcp.yaml")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "infra" / "constraints.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;#]+)", line.strip())
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def _validated(config: dict) -> None:
    """What `ray up` checks: Ray's ray-schema.json, then its consistency rules (with the field
    `prepare_config` would fill in for a config that never went through it)."""
    from ray.autoscaler._private.util import validate_config

    validate_config({"cluster_synced_files": [], **config})


@pytest.mark.parametrize("name", RAY_YAMLS)
def test_ray_cluster_yamls_pass_rays_autoscaler_schema(name):
    config = yaml.safe_load((CLUSTER / name).read_text())
    _validated(config)
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    assert workers and all(v.get("min_workers", 0) == 0 for v in workers.values())  # scale from zero
    if name != "local.yaml":  # a CPU data group on spot/preemptible and a GPU training group
        assert {"cpu_data", "gpu_train"} <= set(workers)
        assert types["gpu_train"]["resources"].get("GPU", 0) > 0
        node = str(types["cpu_data"]["node_config"])
        assert "spot" in node or "preemptible" in node


def test_a_broken_cluster_yaml_is_refused_naming_the_field():
    import jsonschema

    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    del config["available_node_types"]["cpu_data"]["node_config"]
    with pytest.raises(jsonschema.ValidationError, match="'node_config' is a required property"):
        _validated(config)
    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    config["max_workerz"] = 3
    with pytest.raises(jsonschema.ValidationError, match="'max_workerz' was unexpected"):
        _validated(config)


def test_kuberay_manifest_has_the_required_fields():
    manifest = yaml.safe_load((CLUSTER / "kuberay.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    assert manifest["metadata"]["name"]
    spec = manifest["spec"]
    assert spec["rayVersion"] == _pins()["ray"]
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert head["template"]["spec"]["containers"][0]["image"]
    groups = spec["workerGroupSpecs"]
    assert {g["groupName"] for g in groups} >= {"cpu-data", "gpu-train"}
    for g in groups:
        assert isinstance(g["rayStartParams"], dict) and g["minReplicas"] == 0 <= g["maxReplicas"]
        container = g["template"]["spec"]["containers"][0]
        assert container["image"] and container["resources"]["limits"]["cpu"]
    gpu = next(g for g in groups if g["groupName"] == "gpu-train")
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]


def test_versions_and_image_agree_across_dockerfile_yamls_and_constraints():
    pins = _pins()
    dockerfile = (REPO / "infra" / "docker" / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:(\S+)-py(\d)(\d+)", dockerfile, re.M)
    assert base, "the image must start from rayproject/ray:<version>-py<python>"
    assert base.group(1) == pins["ray"], "the base image's Ray is not the pinned one"
    python = f"{base.group(2)}.{base.group(3)}"
    requires = re.search(r'requires-python\s*=\s*">=(\d+)\.(\d+)"', (REPO / "pyproject.toml").read_text())
    assert (int(base.group(2)), int(base.group(3))) >= (int(requires.group(1)), int(requires.group(2)))
    assert python == "3.11"  # CI's and the dev machines' Python
    assert "grep '^torch==' infra/constraints.txt" in dockerfile  # the image installs the pinned torch
    tag = re.search(r"-t (\S+)", dockerfile).group(1)
    images = {yaml.safe_load((CLUSTER / n).read_text())["docker"]["image"] for n in ("aws.yaml", "gcp.yaml")}
    manifest = yaml.safe_load((CLUSTER / "kuberay.yaml").read_text())["spec"]
    images |= {c["image"] for g in [manifest["headGroupSpec"], *manifest["workerGroupSpecs"]]
               for c in g["template"]["spec"]["containers"]}
    assert images == {tag}


def test_dashboards_listen_on_localhost_unless_inside_kubernetes():
    for name in ("aws.yaml", "gcp.yaml"):
        commands = " ".join(yaml.safe_load((CLUSTER / name).read_text())["head_start_ray_commands"])
        assert "--dashboard-host=127.0.0.1" in commands, name
        assert "0.0.0.0" not in commands, name
