"""The host a run trains on: the tf.distribute strategy, CPU threads, malloc, Grappler's settings."""
