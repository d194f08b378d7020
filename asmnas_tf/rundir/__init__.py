"""The run directory: its file names, its lock, atomic writes, the training states, clean stops."""
