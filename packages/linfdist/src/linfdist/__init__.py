"""ℓ∞-distance nets v1 (ICML'21) and v2 (ICLR'22) on certcore's ``norm_dist`` ops.

Not implemented yet: this package holds no layers, models or training code so far.
"""
