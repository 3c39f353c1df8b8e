"""lirpa's compute_bounds: time and peak memory, side by side with auto_LiRPA 0.7.1 (reference §8.3).

Protocol (reference/lirpa.md §8.3): ``torch.manual_seed(0)``; a random-init model of the zoo
(``lirpa.zoo``) in eval mode; ``x ~ U[0, 1)`` drawn next from the same RNG stream; the L∞ box
``x ± eps`` passed as ``x_L``/``x_U`` (no clipping); ``BoundedModule(model, x)``; one warm-up call,
then timed repeats (min and median) under ``torch.no_grad()``, except α-CROWN, which needs grad.
The "+grad" column (IBP and CROWN-IBP) times the bounds followed by ``lb.sum().backward()``.

Configurations (batch sizes per method):

- mlp:    mlp_3layer, MNIST shape (1, 28, 28), eps 0.1: IBP, CROWN-IBP, CROWN, α-CROWN at 256
- cnn7:   cnn_7layer_bn, CIFAR shape (3, 32, 32), eps 2/255: IBP and CROWN-IBP at 64, CROWN at 1
          and 8 (the original runs out of 24 GB at 8), α-CROWN at 1
- resnet: the zoo's resnet (model_resnet of Wong et al. 2018), CIFAR shape, eps 2/255: IBP and
          CROWN-IBP at 64, CROWN and α-CROWN at 1
- method ``forward`` (not run by default): the plain model call, no bounds; the floor every
  bound method pays, and a check of this harness that needs no bound engine.

Every configuration runs in a fresh subprocess with a wall-clock limit (``--timeout``) and, on
CPU, an address-space limit (``--memory-limit-gb``, ``resource.setrlimit(RLIMIT_AS)``, capped at
the address space in use plus the machine's MemAvailable when the process starts), so a
configuration that runs out of memory shows as "OOM" in the table instead of taking the machine
down (the limit counts address space, of which importing torch already takes about 3 GB,
against about 0.5 GB resident; it is not applied on CUDA, whose driver reserves far more). As
other processes' memory is invisible to that limit, a watchdog thread also stops a CPU
configuration, reported as OOM, when the machine's MemAvailable falls below 1 GiB. Peak
memory is the growth over the measured calls (warm-up and repeats) above the memory in use just
before them: on CPU the kernel's peak-RSS counter (VmHWM, reset through /proc/self/clear_refs),
else a 1 ms RSS sampler; on CUDA ``torch.cuda.max_memory_allocated``.

On a busy machine (load above the core count) 2 OpenMP threads can be many times slower than 1;
check ``uptime`` before trusting a ratio.

    python benchmarks/lirpa.py                                  # everything, table (hours on 2 cores)
    python benchmarks/lirpa.py --models mlp --methods IBP CROWN-IBP --repeats 20
    python benchmarks/lirpa.py --models mlp,cnn7 --json         # one JSON object per line per row
    python benchmarks/lirpa.py --quick                          # smoke run: 1 repeat, batch <= 8

The original's figures (``ORIGINAL_0_7_1``) were measured on a 2-core x86-64 CPU with 2 torch
threads; compare ratios only on similar hardware with ``--threads 2``, and expect noise (the
reference saw the same α-CROWN call take 4.3 s to 24 s).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if __name__ == "__main__":
    # Run as a script, this file's folder is sys.path[0], where "import lirpa" would find this file.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import torch  # noqa: E402

#: auto_LiRPA 0.7.1's published timings, seconds, from reference/lirpa.md §8.3 ("compute_bounds
#: timings"): torch 2.8, 2-core x86-64 CPU, 24 GB, 2 torch threads, same protocol as this script.
#: "min"/"median" over the timed repeats after one warm-up; "grad_min": bounds + lb.sum().backward();
#: "min_torch_2_13": the same under torch 2.13.0+cpu. Keys: (zoo model, method, batch).
ORIGINAL_0_7_1: dict[tuple[str, str, int], dict[str, float | str]] = {
    # §8.3 (a) mlp_3layer (784-256-128-10), batch 256, eps 0.1
    ("mlp_3layer", "IBP", 256): {
        "warmup": 0.006, "min": 0.0045, "median": 0.0053, "grad_min": 0.0076, "min_torch_2_13": 0.0126,
    },
    ("mlp_3layer", "CROWN-IBP", 256): {
        "warmup": 0.063, "min": 0.038, "median": 0.045, "grad_min": 0.064, "min_torch_2_13": 0.044,
    },
    ("mlp_3layer", "CROWN", 256): {"warmup": 0.98, "min": 0.743, "median": 0.759, "min_torch_2_13": 0.840},
    # α-CROWN: 20 iterations, lr_alpha 0.1
    ("mlp_3layer", "alpha-CROWN", 256): {"warmup": 133.0, "min": 127.5, "median": 131.0},
    # §8.3 (b) cnn_7layer_bn (CIFAR), eps 2/255
    ("cnn_7layer_bn", "IBP", 64): {"warmup": 1.68, "min": 0.425, "grad_min": 0.570, "min_torch_2_13": 1.49},
    ("cnn_7layer_bn", "CROWN-IBP", 64): {
        "warmup": 10.2, "min": 8.24, "grad_min": 15.75, "min_torch_2_13": 10.2,
    },
    ("cnn_7layer_bn", "CROWN", 1): {"warmup": 77.9, "min": 87.5, "min_torch_2_13": 66.6},  # 1 repeat
    ("cnn_7layer_bn", "CROWN", 2): {"warmup": 190.5, "min": 130.5},  # 1 repeat
    ("cnn_7layer_bn", "CROWN", 8): {"warmup": "OOM", "min": "OOM"},  # killed at 24 GB RSS after 95 s
}  # fmt: skip


@dataclass(frozen=True)
class Setup:
    zoo_name: str
    input_shape: tuple[int, int, int]
    eps: float
    batches: dict[str, tuple[int, ...]]


SETUPS: dict[str, Setup] = {
    "mlp": Setup(
        "mlp_3layer",
        (1, 28, 28),
        0.1,
        {"forward": (256,), "IBP": (256,), "CROWN-IBP": (256,), "CROWN": (256,), "alpha-CROWN": (256,)},
    ),
    "cnn7": Setup(
        "cnn_7layer_bn",
        (3, 32, 32),
        2 / 255,
        {"forward": (64,), "IBP": (64,), "CROWN-IBP": (64,), "CROWN": (1, 8), "alpha-CROWN": (1,)},
    ),
    "resnet": Setup(
        "resnet",
        (3, 32, 32),
        2 / 255,
        {"forward": (64,), "IBP": (64,), "CROWN-IBP": (64,), "CROWN": (1,), "alpha-CROWN": (1,)},
    ),
}
METHODS = ["IBP", "CROWN-IBP", "CROWN", "alpha-CROWN"]
ALL_METHODS = ["forward", *METHODS]
GRAD_METHODS = {"forward", "IBP", "CROWN-IBP"}  # the ones that get a "+grad" column
QUICK_MAX_BATCH = 8
RESULT_MARK = "@@lirpa-bench "
MIN_AVAILABLE = 2**30  # a CPU configuration stops as OOM when the machine has less available


@dataclass(frozen=True)
class Case:
    """One measured configuration; run in its own subprocess."""

    model: str  # a SETUPS key
    method: str
    batch: int
    grad: bool = False
    repeats: int = 5
    budget: float = 60.0
    threads: int = 2
    device: str = "cpu"
    conv_mode: str | None = None  # None: the engine's default
    memory_limit_gb: float = 22.0
    alpha_iterations: int = 20
    alpha_lr: float = 0.1


# ------------------------------------------------------------------------------- the engine


class EngineMissing(RuntimeError):
    pass


def load_engine(module: object | None = None):
    """The lirpa package once it provides the bound engine, else EngineMissing saying so."""
    if module is None:
        import lirpa as module
    missing = [n for n in ("BoundedModule", "BoundedTensor", "PerturbationLpNorm") if not hasattr(module, n)]
    if missing:
        where = getattr(module, "__file__", None) or "?"
        raise EngineMissing(
            f"benchmarks/lirpa.py needs the lirpa bound engine, but lirpa ({where}) has no "
            f"{', '.join(missing)}: the engine (packages/lirpa/src/lirpa/bounded_module.py) is not "
            "there yet. Only '--methods forward' (the plain model call) runs without it."
        )
    return module


# ---------------------------------------------------------------------------- peak memory


def _current_rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _peak_rss() is not None
    except OSError:
        return False


def _peak_rss() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


class PeakMemory:
    """Peak memory growth, in bytes, of what runs inside ``with``: ``.peak_bytes``, ``.how``."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_bytes = 0
        self.how = ""
        self._stop = threading.Event()
        self._sampled = 0
        self._sampler: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            self.how = "cuda max_memory_allocated"
            return self
        self._base = _current_rss()
        if self._base is not None and _reset_peak_rss():
            self.how = "VmHWM"
        elif self._base is not None:
            self.how = "RSS sampled every 1 ms"
            self._sampled = self._base
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        else:  # no /proc: the lifetime high-water mark, which misses peaks below an earlier one
            self.how = "ru_maxrss growth (a lower bound)"
            self._base = self._maxrss()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._sampled = max(self._sampled, _current_rss() or 0)

    @staticmethod
    def _maxrss() -> int:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == "darwin" else rss * 1024

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        elif self.how == "VmHWM":
            peak = _peak_rss() or 0
        elif self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            peak = max(self._sampled, _current_rss() or 0)
        else:
            peak = self._maxrss()
        self.peak_bytes = max(0, peak - self._base)


# --------------------------------------------------------------------- one case, in a child


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _make_call(
    case: Case, model: torch.nn.Module, x0: torch.Tensor, eps: float
) -> tuple[Callable[[], object], str | None]:
    """The measured call, set up (BoundedModule built) but not yet run, and the conv_mode in use."""
    if case.method == "forward":
        if case.grad:
            params = list(model.parameters())

            def forward_grad():
                for p in params:
                    p.grad = None
                model(x0).sum().backward()

            return forward_grad, None

        def forward():
            with torch.no_grad():
                return model(x0)

        return forward, None

    lirpa = load_engine()
    bound_opts = {"conv_mode": case.conv_mode} if case.conv_mode else None
    bm = lirpa.BoundedModule(model, x0, bound_opts=bound_opts)
    conv_mode = case.conv_mode or getattr(bm, "bound_opts", {}).get("conv_mode")
    if case.method == "alpha-CROWN":
        bm.set_bound_opts(
            {"optimize_bound_args": {"iteration": case.alpha_iterations, "lr_alpha": case.alpha_lr}}
        )
    ptb = lirpa.PerturbationLpNorm(norm=float("inf"), x_L=x0 - eps, x_U=x0 + eps)
    x = lirpa.BoundedTensor(x0, ptb)

    if case.method == "alpha-CROWN":

        def alpha():
            with torch.enable_grad():
                return bm.compute_bounds(x=(x,), method=case.method)

        return alpha, conv_mode
    if case.grad:
        params = list(bm.parameters()) if hasattr(bm, "parameters") else list(model.parameters())

        def bounds_grad():
            for p in params:
                p.grad = None
            lb, _ = bm.compute_bounds(x=(x,), method=case.method)
            lb.sum().backward()

        return bounds_grad, conv_mode

    def bounds():
        with torch.no_grad():
            return bm.compute_bounds(x=(x,), method=case.method)

    return bounds, conv_mode


def _report(result: dict) -> None:
    print(RESULT_MARK + json.dumps(result), flush=True)


def measure(case: Case, memory_limit_gb: float | None = None) -> dict:
    """Build, warm up, time and measure one case in this process; prints partial results as it goes."""
    from lirpa.zoo import build_model

    torch.set_num_threads(case.threads)
    setup = SETUPS[case.model]
    torch.manual_seed(0)
    model = build_model(setup.zoo_name, setup.input_shape, 10).eval()
    x0 = torch.rand(case.batch, *setup.input_shape)
    model, x0 = model.to(case.device), x0.to(case.device)
    result: dict = {"status": "ok", "memory_limit_gb": memory_limit_gb}
    t0 = time.perf_counter()
    call, result["conv_mode"] = _make_call(case, model, x0, setup.eps)
    result["setup_s"] = time.perf_counter() - t0
    times: list[float] = []
    with PeakMemory(case.device) as memory:
        _sync(case.device)
        t0 = time.perf_counter()
        call()
        _sync(case.device)
        result["warmup_s"] = time.perf_counter() - t0
        _report({**result, "status": "partial"})  # survives a timeout or a kill in the repeats
        reps = max(1, min(case.repeats, int(case.budget // max(result["warmup_s"], 1e-9))))
        for _ in range(reps):
            _sync(case.device)
            t0 = time.perf_counter()
            call()
            _sync(case.device)
            times.append(time.perf_counter() - t0)
    result.update(
        min_s=min(times),
        median_s=statistics.median(times),
        repeats=len(times),
        peak_mb=memory.peak_bytes / 2**20,
        peak_how=memory.how,
    )
    return result


def failure_status(exc: BaseException) -> str:
    """``OOM`` for an allocation failure, else ``error: <type>: <first line of the message>``."""
    text = str(exc)
    oom_words = (
        "can't allocate memory",
        "out of memory",
        "not enough memory",
        "bad_alloc",
        "cannot allocate",
    )
    if isinstance(exc, MemoryError) or any(w in text.lower() for w in oom_words):
        return "OOM"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"error: {type(exc).__name__}: {first[:200]}"


def _proc_kb(path: str, key: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def address_space_limit(requested_gb: float) -> int:
    """Bytes of address space for this process: ``requested_gb``, but no more than what is mapped
    now plus the machine's MemAvailable, so that running out shows as an allocation failure (OOM in
    the table) rather than the kernel's OOM killer taking this or another process."""
    limit = int(requested_gb * 2**30)
    mapped = _proc_kb("/proc/self/status", "VmSize")
    available = _proc_kb("/proc/meminfo", "MemAvailable")
    if mapped is not None and available is not None:
        limit = min(limit, mapped + available)
    return limit


def _watch_machine_memory(min_available: int) -> None:
    """Exit with an OOM report when the machine's MemAvailable falls below ``min_available``: the
    address-space limit cannot see what other processes take, and the kernel's OOM killer would
    otherwise decide (SIGKILL, possibly of another process)."""
    while True:
        available = _proc_kb("/proc/meminfo", "MemAvailable")
        if available is None:
            return
        if available < min_available:
            _report({"status": f"OOM (machine MemAvailable < {min_available / 2**30:.1f} GiB)"})
            os._exit(3)
        time.sleep(0.02)


def worker(case: Case) -> None:
    limit_gb = None
    if case.device == "cpu":
        threading.Thread(target=_watch_machine_memory, args=(MIN_AVAILABLE,), daemon=True).start()
    if case.device == "cpu" and case.memory_limit_gb > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = address_space_limit(case.memory_limit_gb)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        limit_gb = limit / 2**30
    try:
        result = measure(case, limit_gb)
    except Exception as exc:  # MemoryError included
        result = {"status": failure_status(exc)}
    result["memory_limit_gb"] = limit_gb
    _report(result)


# ------------------------------------------------------------------ the parent: run the cases


def _last_report(stdout: str | bytes | None) -> dict | None:
    """The last report of a child, with the timings of earlier (partial) reports kept."""
    if isinstance(stdout, bytes):
        stdout = stdout.decode(errors="replace")
    found = None
    for line in (stdout or "").splitlines():
        if line.startswith(RESULT_MARK):
            found = {**(found or {}), **json.loads(line[len(RESULT_MARK) :])}
    return found


def run_case(case: Case, timeout: float) -> dict:
    """Run one case in a fresh Python process; the result dict, with status ok/OOM/timeout/…."""
    env = dict(os.environ, OMP_NUM_THREADS=str(case.threads), MKL_NUM_THREADS=str(case.threads))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", json.dumps(asdict(case))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        result = _last_report(exc.stdout) or {}
        result["status"] = f"timeout ({timeout:g} s)"
        return result
    result = _last_report(proc.stdout)
    if result is not None and result["status"] != "partial":
        return result
    result = result or {}
    if proc.returncode < 0:
        import signal

        name = signal.Signals(-proc.returncode).name
        # SIGKILL without a report: most likely the kernel's OOM killer.
        result["status"] = "OOM (SIGKILL)" if name == "SIGKILL" else f"crashed ({name})"
    else:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
        result["status"] = f"error: exit {proc.returncode}: {tail[0][:200]}"
    return result


def plan(args: argparse.Namespace) -> list[Case]:
    cases = []
    for model in args.models:
        for method in args.methods:
            for batch in SETUPS[model].batches[method]:
                if args.quick:
                    batch = min(batch, QUICK_MAX_BATCH)
                cases.append(
                    Case(
                        model=model,
                        method=method,
                        batch=batch,
                        repeats=args.repeats,
                        budget=args.budget,
                        threads=args.threads,
                        device=args.device,
                        conv_mode=args.conv_mode,
                        memory_limit_gb=args.memory_limit_gb,
                        alpha_iterations=args.alpha_iterations,
                        alpha_lr=args.alpha_lr,
                    )
                )
    return list(dict.fromkeys(cases))  # --quick can map two batches onto one


def _ratio(ours: object, theirs: object) -> float | None:
    if isinstance(ours, float) and isinstance(theirs, (int, float)) and theirs > 0:
        return ours / theirs
    return None


def make_row(case: Case, result: dict, grad_result: dict | None) -> dict:
    setup = SETUPS[case.model]
    ok = result.get("status") == "ok"
    original = ORIGINAL_0_7_1.get((setup.zoo_name, case.method, case.batch), {})
    row = {
        "model": setup.zoo_name,
        "method": case.method,
        "batch": case.batch,
        "seconds": result.get("min_s") if ok else None,
        "peak_mb": result.get("peak_mb") if ok else None,
        "status": result.get("status"),
        "median_s": result.get("median_s"),
        "warmup_s": result.get("warmup_s"),
        "repeats": result.get("repeats"),
        "setup_s": result.get("setup_s"),
        "peak_how": result.get("peak_how"),
        "memory_limit_gb": result.get("memory_limit_gb"),
        "eps": setup.eps,
        "input_shape": list(setup.input_shape),
        "device": case.device,
        "threads": case.threads,
        "conv_mode": result.get("conv_mode", case.conv_mode),
        "original_seconds": original.get("min"),
        "ratio": None,
    }
    row["ratio"] = _ratio(row["seconds"], row["original_seconds"])
    if grad_result is not None:
        grad_ok = grad_result.get("status") == "ok"
        row.update(
            grad_seconds=grad_result.get("min_s") if grad_ok else None,
            grad_peak_mb=grad_result.get("peak_mb") if grad_ok else None,
            grad_status=grad_result.get("status"),
            original_grad_seconds=original.get("grad_min"),
        )
        row["grad_ratio"] = _ratio(row["grad_seconds"], row["original_grad_seconds"])
    return row


def _fmt_s(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    v = float(value)
    return f"{v:.4f}" if v < 0.1 else f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _fmt_x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _print_row(row: dict, header: bool) -> None:
    if header:
        print(
            f"{'model':13} {'method':11} {'batch':>5} | {'warm-up s':>9} {'min s':>9} {'median s':>9} "
            f"{'reps':>4} {'+grad s':>9} | {'peak MB':>8} {'+grad MB':>8} | {'0.7.1 min':>9} "
            f"{'0.7.1 +grad':>11} | {'min/0.7.1':>9} {'+grad/0.7.1':>11}"
        )
        print("-" * 146)

    def mb(value: object) -> str:
        return "-" if value is None else f"{value:8.1f}"

    seconds = row["seconds"] if row["status"] == "ok" else row["status"]
    grad = row.get("grad_seconds") if row.get("grad_status", "ok") == "ok" else row.get("grad_status")
    print(
        f"{row['model']:13} {row['method']:11} {row['batch']:>5} | {_fmt_s(row['warmup_s']):>9} "
        f"{_fmt_s(seconds):>9} {_fmt_s(row['median_s']):>9} {row['repeats'] or '-':>4} {_fmt_s(grad):>9} | "
        f"{mb(row['peak_mb']):>8} {mb(row.get('grad_peak_mb')):>8} | "
        f"{_fmt_s(row['original_seconds']):>9} {_fmt_s(row.get('original_grad_seconds')):>11} | "
        f"{_fmt_x(row['ratio']):>9} {_fmt_x(row.get('grad_ratio')):>11}",
        flush=True,
    )


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    for case in plan(args):
        result = run_case(case, args.timeout)
        grad_result = None
        if args.grad and case.method in GRAD_METHODS:
            grad_result = run_case(replace(case, grad=True), args.timeout)
        row = make_row(case, result, grad_result)
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            _print_row(row, header=len(rows) == 1)
            for key in ("status", "grad_status"):
                status = row.get(key) or "ok"
                if status != "ok" and not status.startswith(("OOM", "timeout")):
                    print(f"    {key}: {status}", flush=True)
    return rows


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def _split_commas(values: list[str]) -> list[str]:
    return [v for value in values for v in value.split(",") if v]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(SETUPS),
        metavar="MODEL",
        help=f"comma- or space-separated, from {', '.join(SETUPS)} (default: all)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=METHODS,
        metavar="METHOD",
        help=f"comma- or space-separated, from {', '.join(ALL_METHODS)} (default: {' '.join(METHODS)})",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats after the warm-up (default 5)")
    parser.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="fewer repeats (at least 1) where they would take longer than this many seconds (default 60)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2, as the reference)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--conv-mode",
        choices=["patches", "matrix"],
        default=None,
        help="bound_opts conv_mode (default: the engine's own; auto_LiRPA's is patches)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds per configuration (default 600)"
    )
    parser.add_argument(
        "--memory-limit-gb",
        type=float,
        default=22.0,
        help="address-space limit of each configuration's process on CPU, GiB, capped at what is mapped "
        "plus the machine's MemAvailable (default 22; 0: none)",
    )
    parser.add_argument("--alpha-iterations", type=int, default=20, help="α-CROWN iterations (default 20)")
    parser.add_argument("--alpha-lr", type=float, default=0.1, help="α-CROWN lr_alpha (default 0.1)")
    parser.add_argument("--no-grad-column", dest="grad", action="store_false", help="skip the +grad runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object per row, not a table")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: 1 repeat, batch capped at {QUICK_MAX_BATCH}, 2 α-CROWN iterations",
    )
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._worker:
        worker(Case(**json.loads(args._worker)))
        return
    args.models = _split_commas(args.models)
    args.methods = _split_commas(args.methods)
    for value, known, what in ((args.models, SETUPS, "model"), (args.methods, ALL_METHODS, "method")):
        unknown = [v for v in value if v not in known]
        if unknown:
            parser.error(f"unknown {what}(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1")
    if args.quick:
        args.repeats, args.budget, args.alpha_iterations = 1, 0.0, min(args.alpha_iterations, 2)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    engine_version = None
    if any(m != "forward" for m in args.methods):
        try:
            engine_version = getattr(load_engine(), "__version__", None) or _dist_version("lirpa")
        except EngineMissing as exc:
            sys.exit(str(exc))
    info = {
        "torch": torch.__version__,
        "threads": args.threads,
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "lirpa": engine_version,
        "conv_mode": args.conv_mode,
        "original": "auto_LiRPA 0.7.1, torch 2.8, 2-core x86-64 CPU, 2 threads (reference/lirpa.md §8.3)",
    }
    if args.json:
        print(json.dumps({"info": info}), flush=True)
    else:
        print(
            f"torch {info['torch']}, {args.threads} threads, {args.device}"
            f"{' (' + info['gpu'] + ')' if info['gpu'] else ''}, lirpa {engine_version or '-'}, "
            f"conv_mode {args.conv_mode or 'default'}; the 0.7.1 columns: {info['original']}"
        )
    run(args)


if __name__ == "__main__":
    main()
