"""The search space as data: primitives, genotypes, named genotypes (no TensorFlow)."""
