"""What search and training share to train a model: the loop, its callbacks, the optimizers and their schedules, the gradient clip, mixed precision, inference, and the run skeleton."""
