"""The evaluation stage: the network of a genotype, its model class, size report, export, the training runner."""
