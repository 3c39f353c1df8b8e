"""certcore: the shared core of certkit.

- ``certcore.ops``: L_p-distance and interval ℓ∞-distance ops (C++ CPU, CUDA, pure-PyTorch reference)
- ``certcore.data``: MNIST, CIFAR-10, Tiny-ImageNet and scikit-learn digits with the papers' transforms
- ``certcore.bounds``: intervals and interval bound propagation (IBP) through common layers
- ``certcore.attacks``: PGD in ℓ∞ and ℓ2
- ``certcore.schedules``, ``certcore.training``, ``certcore.runlog``, ``certcore.checkpoint``,
  ``certcore.distributed``, ``certcore.seeding``: the machinery of a resumable training run
- ``certcore.testing``: the soundness kit every package's tests use

``certcore.backend()`` says which backend (cpu/cuda kernels or the reference) serves each op.
"""

from certcore._backend import backend

__version__ = "0.1.0"
__all__ = ["__version__", "backend"]
