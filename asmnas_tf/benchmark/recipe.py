"""The one fixed training every benchmark architecture gets, and its data split.

Chosen so that one pass over the 243 architectures (and a second seed for a
quarter of them) fits in about 4 hours of this project's 2-core CPU with two
single-threaded processes (docs/benchmark.md, "Sizing"). Changing any value
makes another benchmark: the table file records the recipe and its reader
refuses a file of another recipe.
"""

RECIPE = {
    "name": "fmnist-b243-v1",
    "dataset": "fashion_mnist",
    # Training images: the first `train_images` of Fashion-MNIST's training
    # split; the held-out set: all 10,000 test images (never seen by a search).
    "train_images": 60000,
    "test_images": 10000,
    "num_cells": 3,
    "channels": 8,
    "stem_multiplier": 2,
    "batch_size": 128,
    "learning_rate": 0.05,
    "momentum": 0.9,
    "l2": 3e-4,
    "schedule": "cosine",
    # Image presentations at which the held-out accuracy is kept (a learning
    # curve along one run); the last one is the final budget.
    "budgets": [3840, 7680, 15360, 30720, 61440],
    # Seed 0 for every architecture; seed 1 for every fourth (the noise floor).
    "second_seed_every": 4,
}
