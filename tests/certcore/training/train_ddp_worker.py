"""One rank of the 2-process gloo test (launched by test_train_distributed.py through torchrun).

Usage: ``torchrun --standalone --nproc-per-node 2 train_ddp_worker.py OUT_DIR``. Each rank writes what
it saw to ``OUT_DIR/rank<r>.pt``; the test compares the ranks and checks the training step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from certcore import distributed
from certcore.training import fit

SAMPLER_SEED = 7
BATCH = 4


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g))


def main(out: Path) -> None:
    info = distributed.init_distributed()
    report: dict = {
        "rank": info.rank,
        "world_size": distributed.world_size(),
        "backend": info.backend,
        "is_main": distributed.is_main_process(),
    }

    torch.manual_seed(100 + info.rank)  # different weights per rank: DDP must broadcast rank 0's
    model = nn.Linear(5, 3)
    report["initial"] = {k: v.clone() for k, v in model.state_dict().items()}
    ddp = distributed.wrap_ddp(model)
    report["after_wrap"] = {k: v.clone() for k, v in model.state_dict().items()}

    data = dataset()
    sampler = distributed.make_sampler(data, seed=SAMPLER_SEED)
    report["sampler_seed"] = sampler.seed
    report["indices"] = {}
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        report["indices"][epoch] = list(sampler)
    try:
        distributed.make_sampler(data, seed=info.rank)  # the ℓ∞-dist v2 bug: one seed per rank
        report["mismatch_error"] = None
    except ValueError as error:
        report["mismatch_error"] = str(error)

    report["mean_tensor"] = distributed.all_reduce_mean(torch.tensor([float(info.rank), 2.0 * info.rank]))
    report["mean_dict"] = distributed.all_reduce_mean({"a": info.rank, "b": torch.tensor(3.0)})

    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.5)

    def train_one_epoch(epoch: int) -> dict[str, float]:
        sampler.set_epoch(epoch)
        for x, y in DataLoader(data, batch_size=BATCH, sampler=sampler):
            loss = nn.functional.cross_entropy(ddp(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return {"rank": float(info.rank)}

    fit(
        out / "run",
        model=ddp,
        optimizer=optimizer,
        epochs=1,
        train_one_epoch=train_one_epoch,
        spec={"test": "ddp"},
        seed=0,
    )
    report["final"] = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(report, out / f"rank{info.rank}.pt")
    distributed.barrier()
    distributed.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
