"""Fast certified robust training with short warmup (Shi et al., NeurIPS'21).

Not implemented yet: this package holds no training code so far.
"""
