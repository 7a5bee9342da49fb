"""The three measurements of `stablerep benchmark`: input pipeline alone, model step alone, full fit step.

Each runs `warmup` steps unmeasured, then `steps` timed ones, and reports images per second on this
process (a rank's share under DDP). The model step runs forward + backward + optimiser on a batch of
the real shapes synthesised once on the device, under the trainer's precision, so it is the
compute ceiling; the input pipeline is the data module's own loader with its workers; the full
step is `Trainer.fit` with everything the config adds (logging, callbacks, syncs), timed per batch
by a callback from the second batch on.
"""

from __future__ import annotations

import contextlib
import resource
import time
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode

from stablerep_pl.methods.optim import build_adamw

# Dense bf16/fp16 tensor-core peaks (FLOP/s) of common accelerators, for MFU. Names are matched as
# substrings of torch.cuda.get_device_name(); None elsewhere (CPU: no meaningful peak).
PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; PCIe is 756e12
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 125e12,
    "V100": 125e12,
    "T4": 65e12,
}


@dataclass
class Measurement:
    images_per_s: float
    seconds_per_step: float
    steps: int
    extra: dict[str, Any] = field(default_factory=dict)


def images_in(batch: dict[str, Any]) -> int:
    images = batch["images"]
    return int(images.shape[0] * images.shape[1])


def measure_input(datamodule: L.LightningDataModule, steps: int, warmup: int) -> Measurement:
    """Batches straight out of the data module's train loader (workers as configured, no model)."""
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    iterator, count, images = iter(loader), 0, 0
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for batch in iterator:
        images += images_in(batch)
        count += 1
        if count == steps:
            break
    elapsed = time.perf_counter() - start
    return Measurement(images / elapsed, elapsed / max(count, 1), count)


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_FLOPS.items() if key in name), None)


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if "bf16" in precision and "mixed" in precision:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if "16" in precision and "mixed" in precision:
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def measure_model(
    model: Any, batch: dict[str, Any], device: torch.device, precision: str, steps: int, warmup: int
) -> Measurement:
    """Forward + backward + AdamW step of `model.compute_losses` on one synthetic batch of the real shapes."""
    model.to(device).train()
    synthetic = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    if synthetic["images"].dtype == torch.uint8:  # on-device augmentation: the model sees floats
        synthetic["images"] = synthetic["images"].float().div_(255)
    optimizer = build_adamw(model, model.optim, 1e-4)

    def step() -> None:
        with autocast_for(precision, device):
            loss = model.compute_losses(synthetic)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with FlopCounterMode(display=False) as counter:  # one step, counted (forward and backward)
        step()
    flops = counter.get_total_flops()
    for _ in range(max(warmup - 1, 0)):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    elapsed = time.perf_counter() - start
    per_step = elapsed / steps
    peak = peak_flops(device)
    memory = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # fmt: skip
    extra = {
        "flops_per_step": flops,
        "tflops_per_s": flops / per_step / 1e12,
        "mfu": None if peak is None else flops / per_step / peak,
        "peak_memory_bytes": int(memory),
        "peak_memory_kind": "CUDA allocated" if device.type == "cuda" else "process max RSS",
    }
    return Measurement(images_in(batch) * steps / elapsed, per_step, steps, extra)


class StepTimer(L.Callback):
    """Wall time between consecutive batch starts (data fetch + step + hooks), after `warmup` batches."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self.images = warmup, [], 0
        self._last: float | None = None
        self._seen = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last is not None and self._seen > self.warmup:
            self.times.append(now - self._last)
            self.images += images_in(batch)
        self._last, self._seen = now, self._seen + 1


def measure_fit(trainer: L.Trainer, model: Any, datamodule: Any, steps: int, warmup: int) -> Measurement:
    """`Trainer.fit` as configured, for warmup + steps + 1 batches, timed batch to batch."""
    timer = StepTimer(warmup)
    trainer.callbacks.append(timer)
    trainer.fit_loop.epoch_loop.max_steps = warmup + steps + 1  # Trainer(max_steps=…) after the fact
    trainer.fit(model, datamodule=datamodule)
    seconds = sum(timer.times)
    return Measurement(timer.images / seconds, seconds / max(len(timer.times), 1), len(timer.times))
