"""Builds certcore's compiled ops (``certcore._C``).

``CERTCORE_CUDA``: ``auto`` (default) compiles the CUDA kernels when nvcc is found, ``1`` requires
them, ``0`` builds the CPU kernels only. Without a visible GPU the CUDA code is compiled for
``TORCH_CUDA_ARCH_LIST`` (default ``8.0;9.0``). ``CERTCORE_DEBUG=1`` builds with ``-O0 -g``.
"""

from __future__ import annotations

import glob
import os
import shutil

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("src", "certcore", "csrc")


def _default_cuda_home() -> None:
    """Point CUDA_HOME at the toolkit root when nvcc on PATH is only a wrapper script.

    torch guesses CUDA_HOME as the parent of nvcc's folder, which is wrong for a wrapper such as
    /usr/local/bin/nvcc; the toolkit's include/ and lib64/ live under /usr/local/cuda.
    """
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    for root in ("/usr/local/cuda",):
        if os.path.isfile(os.path.join(root, "bin", "nvcc")):
            os.environ["CUDA_HOME"] = root
            return


def _want_cuda() -> bool:
    mode = os.environ.get("CERTCORE_CUDA", "auto").lower()
    if mode not in {"auto", "0", "1"}:
        raise SystemExit(f"CERTCORE_CUDA must be auto, 0 or 1, got {mode!r}")
    if mode == "0":
        return False
    _default_cuda_home()
    from torch.utils.cpp_extension import CUDA_HOME

    found = CUDA_HOME is not None and shutil.which(os.path.join(CUDA_HOME, "bin", "nvcc")) is not None
    if mode == "1" and not found:
        raise SystemExit("CERTCORE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to the toolkit root")
    return found


def _extensions():
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    debug = os.environ.get("CERTCORE_DEBUG") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3", "-g0"]
    # at::parallel_for expands an OpenMP pragma in our translation units: without -fopenmp it runs serially.
    cxx = [*opt, "-std=c++20", "-fopenmp"]
    link = ["-fopenmp"]
    sources = sorted(glob.glob(os.path.join(CSRC, "*.cpp")) + glob.glob(os.path.join(CSRC, "cpu", "*.cpp")))
    if _want_cuda():
        import torch

        if not torch.cuda.is_available():
            # No GPU to query: compile for Ampere and Hopper (CUDA 13 supports sm_75 and newer only).
            os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
        # Headers of the CUDA libraries (cuBLAS, cuSPARSE, ...) that torch's CUDA headers may pull in
        # ship inside torch's nvidia-* wheels, not necessarily with the toolkit. They go in as system
        # include dirs, searched after the toolkit's own include/, so the toolkit's runtime headers win.
        site = os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__)))
        wheel_inc = sorted(glob.glob(os.path.join(site, "nvidia", "*", "include", "")))
        # The .cu files include only light ATen/c10 headers (no torch/extension.h), and the host side
        # is compiled without debug info: both cut the build time severalfold.
        nvcc = ["-O0", "-g", "-lineinfo"] if debug else ["-O3", "-lineinfo", "-Xcompiler", "-g0"]
        nvcc += ["--expt-relaxed-constexpr", "-std=c++20"]
        for d in wheel_inc:
            nvcc += ["-isystem", d]
            cxx += ["-idirafter", d]
        return [
            CUDAExtension(
                "certcore._C",
                sources,
                define_macros=[("CERTCORE_WITH_CUDA", "1")],
                extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                extra_link_args=link,
            )
        ]
    return [CppExtension("certcore._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link)]


def main() -> None:
    # torch.utils.cpp_extension fixes CUDA_HOME when first imported: set it before that.
    if os.environ.get("CERTCORE_CUDA", "auto").lower() != "0":
        _default_cuda_home()
    from torch.utils.cpp_extension import BuildExtension

    setup(
        ext_modules=_extensions(),
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    )


if __name__ == "__main__":
    main()
