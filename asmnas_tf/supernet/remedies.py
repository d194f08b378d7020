"""The known remedies for a weight-sharing search's bias, as one config object (gin `search_remedies`).

Each defaults to the paper's behaviour (nothing changed); docs/search-remedies.md
says what each does on the benchmark.

- `attention_warmup`: the share of the search's steps that train the weights
  only, T1..T4 frozen bit for bit (PC-DARTS: 15 of 50 epochs; parameter-free
  ops win the early race). After it T1..T4 learn at `build_supernet.
  attention_lr_multiplier` times the weights' rate.
- `exclude_zero`: selection never picks `zero` (DARTS's own derivation).
- `selection`: 'coefficients' (the paper, Algorithm 1: mean coefficient) or
  'perturbation' (DARTS-PT, Wang et al. 2021: per edge, the op whose removal
  from the trained supernet costs the most selection accuracy, among the
  edge's `perturbation_top_k` ops by coefficient).
- `max_parameter_free`: at most this many of a cell's kept edges carry a
  parameter-free op (P-DARTS caps skips at 2); None: no cap.
- `skip_dropout`: dropout at this rate on skip_connect's output in every
  training step of the search (P-DARTS: 0.1, 0.4, 0.7 by stage, decaying within each). The
  other parameter-free ops keep their signal: pools share their BatchNorm
  with the convolutions, and zero has none.
"""

import dataclasses
import math

import gin

from asmnas_tf.errors import UserError

SELECTIONS = ("coefficients", "perturbation")


@dataclasses.dataclass(frozen=True)
class SearchRemedies:
    attention_warmup: float = 0.0
    exclude_zero: bool = False
    selection: str = "coefficients"
    perturbation_top_k: int = 3
    max_parameter_free: int | None = None
    skip_dropout: float = 0.0

    def check(self, space, method="asm"):
        """One line naming the binding, the value and what is accepted; before any data is read."""
        warmup = self.attention_warmup
        if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not math.isfinite(warmup) \
                or not 0 <= warmup < 1:
            raise UserError(f"search_remedies.attention_warmup={warmup!r} is not a share of the search in [0, 1) "
                            f"(a warm-up as long as the search would leave the attention untrained)")
        if not isinstance(self.exclude_zero, bool):
            raise UserError(f"search_remedies.exclude_zero={self.exclude_zero!r}: expected True or False")
        if self.exclude_zero and not space.has_zero:
            raise UserError(f"search_remedies.exclude_zero=True needs zero in search_space.primitives "
                            f"({', '.join(space.primitives)})")
        if self.selection not in SELECTIONS:
            raise UserError(f"search_remedies.selection={self.selection!r} is not one of {', '.join(SELECTIONS)}")
        k = self.perturbation_top_k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UserError(f"search_remedies.perturbation_top_k={k!r} is not an int >= 1")
        cap = self.max_parameter_free
        if cap is not None:
            if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
                raise UserError(f"search_remedies.max_parameter_free={cap!r} is not an int >= 0 or None")
            if len(space.parameter_free_indices()) == len(space.primitives):
                raise UserError(f"search_remedies.max_parameter_free={cap} needs an op with parameters in "
                                f"search_space.primitives ({', '.join(space.primitives)})")
        rate = self.skip_dropout
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) \
                or not 0 <= rate < 1:
            raise UserError(f"search_remedies.skip_dropout={rate!r} is not a dropout rate in [0, 1)")
        if rate > 0 and "skip_connect" not in space.primitives:
            raise UserError(f"search_remedies.skip_dropout={rate} needs skip_connect in search_space.primitives "
                            f"({', '.join(space.primitives)})")
        if method == "rsps" and (self.selection != "coefficients" or self.exclude_zero or cap is not None
                                 or rate > 0):
            raise UserError("search_remedies: RSPS ranks sampled architectures; it takes no remedy "
                            "(leave selection, exclude_zero, max_parameter_free and skip_dropout at their defaults)")
        return self

    def warmup_steps(self, total_steps):
        return int(round(self.attention_warmup * total_steps))


@gin.configurable("search_remedies")
def search_remedies(attention_warmup=0.0, exclude_zero=False, selection="coefficients", perturbation_top_k=3,
                    max_parameter_free=None, skip_dropout=0.0):
    """The bound SearchRemedies (gin `search_remedies.*`)."""
    return SearchRemedies(attention_warmup, exclude_zero, selection, perturbation_top_k, max_parameter_free,
                          skip_dropout)
