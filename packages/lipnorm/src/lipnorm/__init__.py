"""Exact ℓ1/ℓ∞ operator norms and norm decay (Liang and Huang, AAAI'21).

Not implemented yet: this package holds no norm code so far.
"""
