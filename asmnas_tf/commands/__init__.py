"""The console scripts (`asmnas-search`, `asmnas-train`, `asmnas-export`,
`asmnas-experiment`, `asmnas-demo`); `python -m asmnas_tf.commands.<name>` runs
the same. Each `main()` parses the flags of `cli` and runs one stage."""
