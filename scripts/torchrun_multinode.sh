#!/usr/bin/env bash
# Multi-node `stablerep fit` with torchrun: run this same script on every node, NODE_RANK 0 … NUM_NODES-1.
#
#   NUM_NODES=4 NODE_RANK=0 MASTER_ADDR=node0 GPUS_PER_NODE=8 scripts/torchrun_multinode.sh \
#       --config configs/stablerep/vitb16_cc12m_1x.yaml --config configs/trainer/ddp.yaml
#   (then NODE_RANK=1, 2, 3 with the same MASTER_ADDR on the other nodes)
#
# Arguments are passed to `stablerep fit`; the script appends --trainer.num_nodes and --trainer.devices.
# torchrun starts GPUS_PER_NODE processes on this node and sets RANK, LOCAL_RANK, WORLD_SIZE,
# MASTER_ADDR and MASTER_PORT for them; Lightning detects torchrun (TorchElasticEnvironment), launches
# nothing itself, and checks that num_nodes × devices equals WORLD_SIZE.
#
# Environment:
#   NUM_NODES      number of nodes (required)
#   NODE_RANK      this node's index, 0 on the node that hosts MASTER_ADDR (required)
#   MASTER_ADDR    address of node 0, reachable from every node (required)
#   MASTER_PORT    a free TCP port on node 0 (default 29500)
#   GPUS_PER_NODE  processes per node (default: the number of GPUs nvidia-smi lists)
#   PYTHON         the interpreter of the environment with stablerep_pl installed (default: python)
set -euo pipefail

: "${NUM_NODES:?set NUM_NODES, the number of nodes}"
: "${NODE_RANK:?set NODE_RANK, the index of this node (0 on the MASTER_ADDR node)}"
: "${MASTER_ADDR:?set MASTER_ADDR, the address of node 0}"
MASTER_PORT="${MASTER_PORT:-29500}"
GPUS_PER_NODE="${GPUS_PER_NODE:-$(nvidia-smi --list-gpus | wc -l)}"
PYTHON="${PYTHON:-python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # DataLoader workers use the other cores
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"

exec "$PYTHON" -m torch.distributed.run \
    --nnodes "$NUM_NODES" --node_rank "$NODE_RANK" --nproc_per_node "$GPUS_PER_NODE" \
    --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    -m stablerep_pl.cli fit "$@" \
    --trainer.num_nodes "$NUM_NODES" --trainer.devices "$GPUS_PER_NODE"
