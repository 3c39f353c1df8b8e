"""Automatic linear relaxation based perturbation analysis (after auto_LiRPA, NeurIPS'20).

Not implemented yet: this package holds no bound propagation code so far.
"""
