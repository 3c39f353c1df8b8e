"""Globally-robust neural networks (GloRo Nets, ICML'21) and follow-ups, in PyTorch.

Not implemented yet: this package holds no models or losses so far.
"""
