"""Every shipped accelerate config loads with accelerate's own loader, says what it is for, and
is documented in the scale-out guide (docs/guide/scale-out.md) with its launch line."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DistributedType

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "recipes" / "accelerate"
EXPECTED = {  # file: (distributed type, machines, processes, use_cpu)
    "cpu.yaml": (DistributedType.NO, 1, 1, True),
    "single-gpu.yaml": (DistributedType.NO, 1, 1, False),
    "multi-gpu.yaml": (DistributedType.MULTI_GPU, 1, 2, False),
    "multi-node.yaml": (DistributedType.MULTI_GPU, 2, 16, False),
    "fsdp.yaml": (DistributedType.FSDP, 1, 2, False),
    "deepspeed-zero2.yaml": (DistributedType.DEEPSPEED, 1, 2, False),
}


def test_every_shipped_config_is_listed_here():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses_with_accelerates_loader(name):
    path = CONFIGS / name
    cfg = load_config_from_file(str(path))
    assert isinstance(cfg, ClusterConfig)
    kind, machines, processes, cpu = EXPECTED[name]
    assert (cfg.distributed_type, cfg.num_machines, cfg.num_processes, cfg.use_cpu) == (kind, machines, processes, cpu)
    # The recipe's train.mixed_precision decides; the launcher must not force another one.
    assert str(cfg.mixed_precision) == "no"
    launch = f"accelerate launch --config_file recipes/accelerate/{name}"
    assert launch in path.read_text(), "the header names its launch line"
    assert launch in (REPO / "docs" / "guide" / "scale-out.md").read_text(), "the scale-out guide gives the launch line"


def test_distributed_settings():
    fsdp = load_config_from_file(str(CONFIGS / "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert fsdp["fsdp_use_orig_params"] is True  # frozen and trained parameters in one module (transfer modes)
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # the run directory holds whole weights
    ds = load_config_from_file(str(CONFIGS / "deepspeed-zero2.yaml")).deepspeed_config
    assert ds["zero_stage"] == 2 and ds["gradient_accumulation_steps"] == 1
    node = load_config_from_file(str(CONFIGS / "multi-node.yaml"))
    assert node.main_process_ip == "MAIN_NODE_IP" and node.main_process_port == 29500 and node.machine_rank == 0
