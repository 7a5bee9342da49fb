"""Multi-positive loss: ours (fused, O(N·D) positives; optionally chunked) vs the dense-mask formulation.

Forward + backward time and peak memory at N images (N/m captions of m images), D dimensions. Every
(implementation, N) runs in a fresh subprocess so peak memory is not polluted by earlier runs: on CPU
the peak is the process's peak RSS (VmHWM, reset through /proc/self/clear_refs after a small warm-up
and the input allocation), on CUDA `torch.cuda.max_memory_allocated` above the inputs.

    python benchmarks/loss.py                       # N = 4096 and 8192, D = 256, m = 6, CPU
    python benchmarks/loss.py --device cuda --n 8192 16384 65536 --chunk-size 4096
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

IMPLEMENTATIONS = ("dense", "ours", "ours_chunked")


def dense_multipos(
    features: torch.Tensor, labels: torch.Tensor, temperature: float, cache: dict
) -> torch.Tensor:
    """The reference code's way: N×N float masks, diagonal pushed down by 1e9, explicit targets."""
    feats = F.normalize(features, dim=-1)
    n = feats.shape[0]
    if n not in cache:  # the reference caches this mask per batch size
        cache[n] = torch.scatter(
            torch.ones(n, n, device=feats.device), 1, torch.arange(n, device=feats.device).view(-1, 1), 0
        )
    logits_mask = cache[n]
    mask = torch.eq(labels.view(-1, 1), labels.view(1, -1)).float() * logits_mask
    logits = feats @ feats.T / temperature
    logits = logits - (1 - logits_mask) * 1e9
    targets = mask / mask.sum(1, keepdim=True).clamp(min=1.0)
    return -(targets * F.log_softmax(logits, dim=-1)).sum(1).mean()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_cpu_peak() -> bool:
    """Reset VmHWM (Linux ≥ 4.0); False when not possible (then ru_maxrss is used as is)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _cpu_rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_worker(args: argparse.Namespace) -> dict:
    """One implementation at one N: peak memory of the first fwd+bwd, then the median of timed repeats."""
    from stablerep_pl.losses import MultiPosConLoss

    device = torch.device(args.device)
    torch.manual_seed(0)
    cache: dict = {}
    if args.impl == "dense":

        def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return dense_multipos(x, y, args.temperature, cache)
    else:
        chunk = args.chunk_size if args.impl == "ours_chunked" else None
        loss_fn = MultiPosConLoss(args.temperature, chunk_size=chunk)

    def step(n: int) -> float:
        x = features[:n] if n < args.n else features
        value = loss_fn(x, labels[:n])
        value.backward()
        return value.item()

    # Warm-up at a small size: thread pools, kernels and allocator arenas are not the loss's memory.
    features = torch.randn(args.n, args.dim, device=device, requires_grad=True)
    labels = torch.arange(args.n, device=device) // args.m
    step(256)
    features.grad = None
    cache.clear()
    gc.collect()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
    else:
        exact = _reset_cpu_peak()
        baseline = (
            _cpu_rss_kib("VmRSS") * 1024
            if exact
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        )
    value = step(args.n)
    _sync(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - baseline
    else:
        peak = (_cpu_rss_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        peak -= baseline
    times = []
    for _ in range(args.repeats):
        features.grad = None
        _sync(device)
        start = time.perf_counter()
        step(args.n)
        _sync(device)
        times.append(time.perf_counter() - start)
    # Minimum over repeats: the least disturbed run (the machine may be shared).
    return {
        "time_s": min(times),
        "time_median_s": statistics.median(times),
        "peak_bytes": peak,
        "loss": value,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, nargs="+", default=[4096, 8192], help="global batch sizes")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--m", type=int, default=6, help="images per caption")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--impl", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.impl is not None:  # worker mode: one measurement, printed as JSON
        args.n = args.n[0]
        print(json.dumps(run_worker(args)))
        return

    print(f"device={args.device} D={args.dim} m={args.m} repeats={args.repeats} chunk={args.chunk_size}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = (
        f"{'N':>6} {'impl':<13} {'min time (s)':>12} {'median (s)':>10} {'peak (MiB)':>11} "
        f"{'time ratio':>11} {'mem ratio':>10} {'loss':>10}"
    )
    print(header)
    print("-" * len(header))
    for n in args.n:
        results = {}
        for impl in IMPLEMENTATIONS:
            cmd = [
                sys.executable,
                __file__,
                "--impl",
                impl,
                "--n",
                str(n),
                "--device",
                args.device,
                "--dim",
                str(args.dim),
                "--m",
                str(args.m),
                "--repeats",
                str(args.repeats),
                "--chunk-size",
                str(args.chunk_size),
                "--temperature",
                str(args.temperature),
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[impl] = json.loads(out.strip().splitlines()[-1])
        dense = results["dense"]
        for impl, r in results.items():
            time_ratio = r["time_s"] / dense["time_s"]
            mem_ratio = r["peak_bytes"] / dense["peak_bytes"]
            print(
                f"{n:>6} {impl:<13} {r['time_s']:>12.3f} {r['time_median_s']:>10.3f} {r['peak_bytes'] / 2**20:>11.1f} "
                f"{time_ratio:>11.2f} {mem_ratio:>10.2f} {r['loss']:>10.5f}"
            )
    print("ratios: min time and peak memory relative to the dense-mask implementation (goal ≤ 0.8 and ≤ 0.5)")


if __name__ == "__main__":
    main()
