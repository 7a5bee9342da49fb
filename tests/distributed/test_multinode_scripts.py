"""The multi-node launch scripts: both parse (`bash -n`), and scripts/torchrun_multinode.sh trains on
two simulated nodes of one CPU process each (two copies of the script on this machine, NODE_RANK 0
and 1, MASTER_ADDR 127.0.0.1), which is `--trainer.num_nodes 2` with the DDP config for real."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [ROOT / "scripts" / "torchrun_multinode.sh", ROOT / "scripts" / "slurm_multinode.sbatch"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_valid_bash_and_size_the_trainer(script: Path) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    subprocess.run([bash, "-n", str(script)], check=True, capture_output=True)
    text = script.read_text()
    assert '"$@"' in text and "--trainer.num_nodes" in text and "--trainer.devices" in text
    assert "-m stablerep_pl.cli fit" in text
    assert os.access(script, os.X_OK)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_script_trains_on_two_simulated_nodes(tmp_path: Path, overrides, read_records) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_", "PL_"))}
    env |= {"NUM_NODES": "2", "GPUS_PER_NODE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
            "PYTHON": sys.executable, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(ROOT / "src")])}  # fmt: skip
    args = ["--config", str(ROOT / "configs" / "quickstart.yaml"), "--config", str(ROOT / "configs" / "trainer" / "ddp.yaml"),
            "--config", str(overrides(tmp_path)), "--trainer.accelerator=cpu", "--trainer.max_steps=2",
            "--data.init_args.num_captions=64", "--data.init_args.batch_size=8", "--data.init_args.num_workers=0"]  # fmt: skip
    nodes = [
        subprocess.Popen(
            [str(SCRIPTS[0]), *args],
            cwd=tmp_path,
            env=env | {"NODE_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for rank in range(2)
    ]
    logs = []
    try:
        for node in nodes:
            logs.append(node.communicate(timeout=300)[0])
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
    if any(node.returncode != 0 for node in nodes):
        pytest.fail("torchrun nodes failed:\n" + "\n----\n".join(log[-6000:] for log in logs))
    records = read_records(tmp_path)
    for rank, record in enumerate(records):
        assert (record["rank"], record["node_rank"], record["num_nodes"], record["world_size"]) == (
            rank,
            rank,
            2,
            2,
        )
        assert record["global_step"] == 2 and record["global_batch_images"] == 64
    for name, value in records[0]["final_state"].items():
        assert torch.equal(value, records[1]["final_state"][name]), name
