"""What search and training share: the training loop, callbacks, optimizers, gradient clip, strategy, graph options, inference, run directory, command line."""
