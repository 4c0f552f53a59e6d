"""The cluster files validate against the schema `ray up` checks them with."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import ray.autoscaler
import yaml

from tests.conftest import REPO


def test_cluster_files_match_rays_schema():
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    files = sorted((REPO / "cluster").glob("*.yaml"))
    assert files
    for path in files:
        config = yaml.safe_load(path.read_text())
        jsonschema.validate(config, schema)
        assert config["head_node_type"] in config["available_node_types"]
        assert any("cnnjobs" in command for command in config["setup_commands"]), path
