"""Keras layers: op maths, candidate ops, attention (eq. 4.3-4.5), the fused mixed edge, alphas, drop-path, aux head."""
