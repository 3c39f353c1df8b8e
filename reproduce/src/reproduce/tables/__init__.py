"""One module per paper package, each defining that package's ``TableSpec``s at module level.

``reproduce.registry`` imports every module here (``linfdist.py``, ``lirpa.py``, ``fastibp.py``,
``lipnorm.py``, ``gloro.py``, ...) and collects the ``TableSpec`` instances bound to module-level
names (or listed in a module-level ``TABLES``). Write each spec as a literal call,
``NAME = TableSpec(id="linfdist-cifar8", ...)``: the noxfile reads the ids from the source with
``ast`` (``reproduce.table_ids``) because it runs without torch, and ``tests/reproduce`` checks that
the ids it reads equal the registry's.
"""
