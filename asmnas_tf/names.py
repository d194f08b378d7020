"""Names shared across the stages, in one place (no TensorFlow here).

The output keys of both models, the selection rules, the stems.
"""

# Model outputs (a dict): the logits, the evaluation network's auxiliary
# head, the supernet's per-sample coefficients [batch, cells, 14, 8].
LOGITS = "logits"
AUX_LOGITS = "aux_logits"
COEFFICIENTS = "coefficients"

# Selection rules (paper Algorithm 1, steps 6-13; README "Selection").
RULES = ("argmax", "top2")

# The stems of the evaluation network and its auxiliary head: CIFAR-style
# (one 3x3 convolution) or ImageNet-style (two stride-2 convolutions).
STEMS = ("cifar", "imagenet")

# A selection choice counts as confident when its bootstrap confidence is at
# least this (`supernet/confidence.py`, the heatmap's marks).
CONFIDENT = 0.95
