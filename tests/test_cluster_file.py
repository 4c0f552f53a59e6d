"""The cluster file: valid for `ray up` (Ray's own schema), and what a GPU cluster for cnnjobs needs on top of it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ray.autoscaler
import yaml

from tests.conftest import REPO

GPU_AMI = "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"


def test_cluster_files_match_rays_schema():
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    files = sorted((REPO / "cluster").glob("*.yaml"))
    assert files
    for path in files:
        config = yaml.safe_load(path.read_text())
        jsonschema.validate(config, schema)
        assert config["head_node_type"] in config["available_node_types"]
        assert any("cnnjobs" in command for command in config["setup_commands"]), path


def test_the_gpu_cluster_reaches_its_bucket_runs_current_cuda_and_keeps_the_head_free():
    config = yaml.safe_load((REPO / "cluster/gpu.yaml").read_text())
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = {name: node for name, node in types.items() if name != config["head_node_type"]}
    # Ray gives the head its default instance profile (S3 access) unless the file names one; workers get none
    # unless the file names one: each worker type must, or its checkpoint uploads and shard reads are refused.
    assert all(node["node_config"].get("IamInstanceProfile") for node in workers.values()), workers
    # Without an ImageId Ray boots its default Deep Learning AMI (CUDA 11), too old for torch's CUDA 13 wheels.
    assert {node["node_config"].get("ImageId") for node in types.values()} == {GPU_AMI}
    assert head["resources"] == {"CPU": 0}, "no training or data task on the head"
    eight = [name for name, node in workers.items() if node["node_config"]["InstanceType"] in
             ("p4d.24xlarge", "p4de.24xlarge", "p5.48xlarge", "g5.48xlarge", "g6.48xlarge")]
    assert eight and all(types[name]["max_workers"] >= 1 for name in eight), "a node type with 8 GPUs"
    assert config["max_workers"] >= max(node["max_workers"] for node in workers.values())
    pins = " ".join(config["setup_commands"])
    assert "torch==2.14.1" in pins and "torchvision==0.29.1" in pins
    assert "rayproject/ray:2.60.0-" in config["docker"]["image"] and config["docker"]["image"].endswith("-gpu")
