"""A few data-parallel QAT steps of a tiny model, as ``train`` takes them (run under torchrun).

``python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py OUT`` writes every
rank's per-epoch losses and final weights to ``OUT/rank{r}.pt``; ``steps(World())`` is the same
run in one process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from test_qat import small_model

from rmsmp.quant.ddp import World, init_world, wrap
from rmsmp.quant.methods import method, prepare
from rmsmp.quant.qat import ActQuantizer, init_act_steps
from rmsmp.quant.train import objective, run_epoch

EPOCHS, BATCHES, BATCH = 2, 3, 8


def steps(world: World) -> dict:
    """Fixed4 QAT of test_qat's small net on fixed random data: per-epoch losses, final weights.

    In float64, so that no activation lands close enough to a rounding boundary for the
    replicas' smaller convolutions (summed in another order) to round it the other way.
    """
    torch.manual_seed(0)
    model = small_model()
    x = torch.randn(BATCHES * BATCH, 3, 8, 8)
    y = torch.randint(0, 10, (BATCHES * BATCH,))
    prepare(model, method("fixed4"), x[:BATCH])
    model, x = model.double(), x.double()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    data = [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(y), BATCH)]
    model.train()
    init_act_steps(model, data[0][0])
    with torch.no_grad():  # off the data: the init puts one activation exactly on the clip
        for q in model.modules():  # boundary, where summation order would decide its gradient
            if isinstance(q, ActQuantizer):
                q.step.mul_(1.01)
    net = wrap(model, world)
    loss_of = objective(None, world.device)
    losses = [run_epoch(model, net, opt, None, data, loss_of, world) for _ in range(EPOCHS)]
    return {"losses": losses, "state": {k: v.clone() for k, v in model.state_dict().items()}}


if __name__ == "__main__":
    w = init_world()
    torch.save(steps(w), Path(sys.argv[1]) / f"rank{w.rank}.pt")
