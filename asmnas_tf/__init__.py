"""asmnas_tf: ASM-NAS (architecture self-attention NAS) on Keras 3 / TensorFlow."""
