"""A search's options (`SearchConfig`, gin name `run_search`) and what it returns (`SearchResult`)."""

import dataclasses

import gin

from asmnas_tf.errors import UserError
from asmnas_tf.supernet.budget import Budget
from asmnas_tf.supernet.selection import RULES
from asmnas_tf.training.run_skeleton import check_counts, check_run_bindings, config_with

METHODS = ("asm", "darts1", "darts2", "rsps")


@dataclasses.dataclass
class SearchResult:
    """What a search returns (one type for every case).

    `genotype`: the selected cells (None on a multi-worker worker that is
    not the chief). `coefficients`: mean coefficient per (cell, edge, op)
    [L, 14, 8] on the selection split (None when the run was already
    complete). `history`: per-epoch metrics of this call's training.
    `model`: the trained supernet (a keras.Model), None when the run was
    already complete. `model_dir`: the run directory, None without one.
    `diagnostics`: the end-of-search report (`report.py`: init-vs-final
    agreement, drift, confidence; for RSPS its ranked candidates).
    """

    genotype: object = None
    coefficients: object = None
    selection_accuracy: float = None
    history: dict = dataclasses.field(default_factory=dict)
    model: object = None
    model_dir: str = None
    plots: list = dataclasses.field(default_factory=list)
    timing: dict = dataclasses.field(default_factory=dict)
    diagnostics: dict = dataclasses.field(default_factory=dict)
    chief: bool = True
    resumed_complete: bool = False


@gin.configurable("run_search")
@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """A search's options, checked once (`check`) before any data is read or file written.

    Its gin name is `run_search`: `run_search.epochs = 10` binds a field.
    Fields not given keep gin's binding, else these defaults (the paper's).
    `save_every_steps`: the training state is saved this often inside an
    epoch (and at every epoch end), so a killed run loses at most that many
    steps (`train_loop.py`). `telemetry_samples`: selection images selected
    on at every epoch end (`telemetry.py`; 0 turns it off). RSPS
    (`method="rsps"`, `rsps.py`) ranks `rsps_candidates` sampled
    architectures on the first `rsps_images` images of the selection half.
    `max_params`, `max_multiply_adds`: the largest evaluation network the
    search may pick, the network `build_eval_net`'s bindings build (bind
    them as the train step does); checked before the search trains.
    """

    method: str = "asm"
    epochs: int = 30
    batch_size: int = 64
    selection_batch_size: int = 256
    rule: str = "argmax"
    seed: int = 0
    deterministic: bool = False
    save_every_steps: int = 100
    telemetry_samples: int = 256
    rsps_candidates: int = 50
    rsps_images: int = 500
    verbose: object = "auto"
    max_params: int = None
    max_multiply_adds: int = None

    @property
    def budget(self):
        """The evaluation network's size limit (`budget.py`): selection picks the best genotype within it."""
        return Budget(self.max_params, self.max_multiply_adds)

    def check(self):
        """One line naming the binding, the value and what is accepted; returns self."""
        if self.method not in METHODS:
            raise UserError(f"run_search.method={self.method!r} is not one of {', '.join(METHODS)}")
        if self.rule not in RULES:
            raise UserError(f"run_search.rule={self.rule!r} is not one of {', '.join(RULES)}")
        check_counts("run_search", epochs=(self.epochs, 1), batch_size=(self.batch_size, 1),
                     selection_batch_size=(self.selection_batch_size, 1),
                     save_every_steps=(self.save_every_steps, 0), telemetry_samples=(self.telemetry_samples, 0),
                     rsps_candidates=(self.rsps_candidates, 1), rsps_images=(self.rsps_images, 1),
                     seed=(self.seed, 0))
        check_run_bindings("run_search", self.verbose)
        self.budget.check()
        if self.method == "rsps" and self.budget.active:
            raise UserError("run_search.max_params/max_multiply_adds: RSPS ranks sampled architectures and has no "
                            "values to budget; use method 'asm', 'darts1' or 'darts2'")
        if self.method == "rsps" and self.rule != "argmax":
            raise UserError(f"run_search.rule={self.rule!r}: RSPS samples argmax architectures (one op per edge); "
                            f"use rule 'argmax' with method 'rsps'")
        return self


def search_config(config=None, **fields):
    """`config` (or the bound SearchConfig) with `fields` replaced; an unknown field is one line."""
    return config_with(SearchConfig, config, fields, "search")
