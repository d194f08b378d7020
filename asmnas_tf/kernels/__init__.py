"""Compiled CPU kernels: ASM's fused attention and mixing (eq. 4.2-4.5), built by `make setup`."""
