"""certcore's norm_dist vs torch.cdist vs the broadcast reference vs a same-size matmul.

One run times, side by side on the same inputs, for p in {inf, 8, 7.5}, the forward pass (no grad:
the inference / certification path) and forward + backward (gradients of x and w):

- certkit:   certcore.ops.norm_dist (whatever certcore.backend() says serves it)
- cdist:     torch.cdist on the same rows (for the conv shape, x transposed to (B*HW, CI))
- reference: certcore.ops.reference.norm_dist, the chunked pure-PyTorch broadcast formula
- matmul:    (B*HW, CI) @ (CI, CO), the GEMM of the same size (the roofline proxy; its backward is
             the two GEMMs of the gradients)

Shapes: "fc" B=512, CI=CO=1024 and "conv" (3x3 patches of 32 channels on 32x32: CI=288, HW=1024,
B=8, CO=128). On a GPU the CUDA kernel (and cdist, matmul on the GPU) are timed too.

    python benchmarks/norm_dist.py                 # table
    python benchmarks/norm_dist.py --json          # one JSON object per line per row
    python benchmarks/norm_dist.py --quick         # smaller shapes, a smoke run
    python benchmarks/norm_dist.py --paired 60     # + median of back-to-back certkit/matmul ratios

Slow contenders (torch.cdist's p = 8 backward takes seconds) are timed once; fast ones are
repeated and the median is reported. Other processes on the machine change the numbers: compare
ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable

import torch

import certcore
from certcore.ops import norm_dist, reference

SHAPES = {
    # name: (B, CI, HW, CO)
    "fc": (512, 1024, 1, 1024),
    "conv": (8, 288, 1024, 128),
}
QUICK_SHAPES = {"fc": (64, 256, 1, 256), "conv": (2, 72, 256, 32)}
P_VALUES = [math.inf, 8.0, 7.5]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


CLOCK = time.perf_counter


def timeit(fn: Callable[[], object], device: str, budget_s: float, max_reps: int) -> float:
    """Median seconds of fn(): one timed call; more (up to max_reps) while within budget_s."""
    _sync(device)
    t0 = CLOCK()
    fn()
    _sync(device)
    first = CLOCK() - t0
    if first * 2 > budget_s:
        return first  # slow: timed once (the call above also warmed nothing up worth re-timing)
    times = []
    reps = max(1, min(max_reps, int(budget_s / max(first, 1e-6))))
    for _ in range(reps):
        _sync(device)
        t0 = CLOCK()
        fn()
        _sync(device)
        times.append(CLOCK() - t0)
    return statistics.median(times)


def paired_ratio(fn: Callable[[], object], ref: Callable[[], object], device: str, rounds: int) -> float:
    """Median over ``rounds`` of time(fn) / time(ref), the two timed back to back in each round: load
    from other processes hits both sides of a round alike, which a comparison of separate medians
    does not guarantee on a shared machine."""
    ratios = []
    for _ in range(rounds):
        pair = []
        for f in (fn, ref):
            _sync(device)
            t0 = CLOCK()
            f()
            _sync(device)
            pair.append(CLOCK() - t0)
        ratios.append(pair[0] / pair[1])
    return statistics.median(ratios)


def _contenders(x: torch.Tensor, w: torch.Tensor, p: float, with_grad: bool, skip_reference: bool):
    """name -> callable running one forward (and backward) pass."""
    B, CI, HW = x.shape
    rows = x.permute(0, 2, 1).reshape(B * HW, CI)
    g_op = torch.randn(B, w.shape[0], HW, device=x.device, dtype=x.dtype)
    g_rows = g_op.permute(0, 2, 1).reshape(B * HW, -1)
    out: dict[str, Callable[[], object]] = {}
    if not with_grad:

        def no_grad(fn):
            def run():
                with torch.no_grad():
                    return fn()

            return run

        out["certkit"] = no_grad(lambda: norm_dist(x, w, p))
        out["cdist"] = no_grad(lambda: torch.cdist(x.permute(0, 2, 1).reshape(B * HW, CI), w, p=p))
        if not skip_reference:
            out["reference"] = no_grad(lambda: reference.norm_dist(x, w, p))
        out["matmul"] = no_grad(lambda: rows @ w.t())
        return out

    xg = x.clone().requires_grad_(True)
    wg = w.clone().requires_grad_(True)
    rows_g = rows.clone().requires_grad_(True)

    def fwd_bwd(forward, grad, leaves):
        def run():
            for leaf in leaves:
                leaf.grad = None
            forward().backward(grad)

        return run

    out["certkit"] = fwd_bwd(lambda: norm_dist(xg, wg, p), g_op, (xg, wg))
    out["cdist"] = fwd_bwd(
        lambda: torch.cdist(xg.permute(0, 2, 1).reshape(B * HW, CI), wg, p=p), g_rows, (xg, wg)
    )
    if not skip_reference:
        out["reference"] = fwd_bwd(lambda: reference.norm_dist(xg, wg, p), g_op, (xg, wg))
    out["matmul"] = fwd_bwd(lambda: rows_g @ wg.t(), g_rows, (rows_g, wg))
    return out


def _warm_up(device: str) -> None:
    """Run every contender once on a tiny input, so that one-time costs stay out of the timings.

    The first ``Tensor.backward(grad)`` of a process imports torch's symbolic-shapes module (sympy,
    about 0.5 s): without this warm-up it lands in whichever contender is timed first.
    """
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 3, generator=gen).to(device)
    w = torch.randn(4, 8, generator=gen).to(device)
    for p in P_VALUES:
        for with_grad in (False, True):
            for fn in _contenders(x, w, p, with_grad, skip_reference=False).values():
                fn()
    _sync(device)


def run(args: argparse.Namespace) -> list[dict]:
    shapes = QUICK_SHAPES if args.quick else SHAPES
    devices = ["cpu"]
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append("cuda")
    if args.device == "cuda":
        devices = [d for d in devices if d == "cuda"]
        if not devices:
            sys.exit("--device cuda: no CUDA device is available")
    rows = []
    for device in devices:
        _warm_up(device)
        for shape_name in args.shapes:
            B, CI, HW, CO = shapes[shape_name]
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(B, CI, HW, generator=gen).to(device)
            w = torch.randn(CO, CI, generator=gen).to(device)
            for p in P_VALUES:
                for pass_name, with_grad in (("fwd", False), ("fwd+bwd", True)):
                    row = {
                        "device": device,
                        "shape": shape_name,
                        "B": B,
                        "CI": CI,
                        "HW": HW,
                        "CO": CO,
                        "p": "inf" if math.isinf(p) else p,
                        "pass": pass_name,
                    }
                    contenders = _contenders(x, w, p, with_grad, args.no_reference)
                    for name, fn in contenders.items():
                        row[f"{name}_s"] = timeit(fn, device, args.budget, args.max_reps)
                    if args.paired:
                        row["paired_certkit_over_matmul"] = paired_ratio(
                            contenders["certkit"], contenders["matmul"], device, args.paired
                        )
                    rows.append(row)
                    if args.json:
                        print(json.dumps(row), flush=True)
                    else:
                        _print_row(row, header=len(rows) == 1)
    return rows


def _fmt(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:9.1f}" if s < 10 else f"{s:8.1f}s"


def _print_row(row: dict, header: bool) -> None:
    if header:
        print(
            f"{'device':6} {'shape':5} {'p':>5} {'pass':8} | {'certkit ms':>10} {'cdist ms':>10} "
            f"{'reference ms':>12} {'matmul ms':>10} | {'cdist/certkit':>13} {'certkit/matmul':>14}"
        )
        print("-" * 112)
    ck, cd, mm = row["certkit_s"], row["cdist_s"], row["matmul_s"]
    paired = row.get("paired_certkit_over_matmul")
    print(
        f"{row['device']:6} {row['shape']:5} {str(row['p']):>5} {row['pass']:8} | "
        f"{_fmt(ck):>10} {_fmt(cd):>10} "
        f"{_fmt(row.get('reference_s')):>12} {_fmt(mm):>10} | {cd / ck:12.1f}x {ck / mm:13.2f}x"
        + ("" if paired is None else f"  (paired: {paired:.2f}x)"),
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object per row instead of a table"
    )
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke run of the script)")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds of repeats per timing (default 1)")
    parser.add_argument("--max-reps", type=int, default=7, help="most repeats per timing (default 7)")
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) broadcast reference")
    parser.add_argument(
        "--paired",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="also time certkit and the matmul back to back ROUNDS times and report the median ratio "
        "(robust to load from other processes)",
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time (default); cpu: this process's CPU time, robust to other load on the "
        "machine but the sum over threads (use with --threads 1; CPU only)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        global CLOCK
        CLOCK = time.process_time
        if args.device != "cpu":
            args.device = "cpu"
    info = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "backend": certcore.backend(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "clock": args.clock,
    }
    if args.json:
        print(json.dumps({"info": info}), flush=True)
    else:
        print(
            f"torch {info['torch']}, {info['threads']} CPU threads, "
            f"backend {info['backend']}, GPU {info['cuda']}, {args.clock} clock"
        )
    run(args)


if __name__ == "__main__":
    main()
