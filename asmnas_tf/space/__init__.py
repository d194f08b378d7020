"""The search space as data: the op table, search spaces (op set, nodes), genotypes, named genotypes (no TensorFlow)."""
