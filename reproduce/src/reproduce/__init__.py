"""certkit's reproduce framework: every published results table is one command.

    reproduce list
    reproduce run linfdist-cifar8 --profile quick --data-dir ../shared/data
    reproduce report runs/linfdist-cifar8-quick-20260101-120000

A table row is a typed :class:`~reproduce.spec.TableSpec` in ``reproduce.tables.<package>``; its
experiment entry point is called as ``run(spec, profile, ctx) -> dict[str, float]`` with a
:class:`~reproduce.spec.RunContext`. The runner writes ``results.json`` and ``REPORT.md`` into the run
directory and exits non-zero when a number falls outside its tolerance.
"""

from reproduce.spec import Expected, Profile, ReproduceError, RunContext, Source, TableSpec

__version__ = "0.1.0"
__all__ = ["Expected", "Profile", "ReproduceError", "RunContext", "Source", "TableSpec", "__version__"]
