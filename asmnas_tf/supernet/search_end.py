"""The search's end (Algorithm 1, steps 6-13): selection on the frozen supernet, and the files it writes.

`TrainedSupernet` carries what the training left (the model, its run
directory, the options and the clocks); `select_and_write` picks the
genotype from the mean coefficients (or DARTS-PT perturbation scores), within
a budget if one is set; `rsps_select_and_write` ranks RSPS's sampled paths.
"""

import dataclasses
import os
import time

import gin
import numpy as np

from asmnas_tf.evaluation.cost_table import genotype_choices
from asmnas_tf.plots import plot_pareto, write_run_plots
from asmnas_tf.rundir import run_dir as rd
from asmnas_tf.space.search_space import search_space
from asmnas_tf.supernet.budget import (Budget, Problem, front_record, pareto_front, score as budget_score,
                                       unscored_below)
from asmnas_tf.supernet.builder import PATH_SAMPLER
from asmnas_tf.supernet.confidence import selection_confidence
from asmnas_tf.supernet.perturbation import perturbation_scores
from asmnas_tf.supernet.report import search_report
from asmnas_tf.supernet.rsps import rsps_select
from asmnas_tf.supernet.search_config import SearchResult
from asmnas_tf.supernet.selection import coefficient_samples, mean_coefficients, select_genotype
from asmnas_tf.training.hparams import write_session
from asmnas_tf.training.run_skeleton import write_operative_config


@dataclasses.dataclass
class TrainedSupernet:
    """A supernet after its training, with what its end needs to select and to write."""

    model: object
    run: rd.RunDir
    config: object  # the SearchConfig
    remedies: object  # the SearchRemedies
    supernet_kwargs: dict
    source: dict  # the genotype's provenance: method, dataset, seed (and remedies)
    history: object
    timer: object  # the StepTimer
    build_s: float
    started: float  # perf_counter at the start of the build
    keep_files: bool

    def timing(self, selection_accuracy):
        return {"build_s": self.build_s, **self.timer.summary(), "selection_accuracy": selection_accuracy,
                "wall_s": time.perf_counter() - self.started}

    def write_hparams(self, metrics):
        """The run's TensorBoard HParams session: its options, remedies and supernet size; its final figures."""
        settings = {key: value for key, value in dataclasses.asdict(self.config).items() if key != "verbose"}
        settings.update({f"remedies.{key}": value for key, value in dataclasses.asdict(self.remedies).items()})
        for name in ("build_supernet", "search_space"):  # what gin bound, then what the call gave
            settings.update({f"{name}.{key}": value for key, value in gin.get_bindings(name).items()})
        settings.update({f"build_supernet.{key}": value for key, value in self.supernet_kwargs.items()})
        settings["dataset"] = self.source["dataset"]
        write_session(self.run.tensorboard, f"{self.source['method']}-seed{self.source['seed']}", settings, metrics)


def initial_coefficients(model, select, run, write):
    """Mean coefficients of the untrained supernet on the selection split (the baseline).

    Computed before the first step and kept in the run directory, so that
    a resumed run compares with the same initialisation.
    """
    record = run.read_attention(initial=True)
    if record is not None:
        return record.coefficients
    initial, num_samples, _ = mean_coefficients(model, select)
    if write:
        run.write_attention(initial, num_samples, initial=True)
    return initial


def select_and_write(done, select, initial_coeffs, costs=None):
    """Selection from the coefficients of the frozen supernet in inference mode; the run's files."""
    model, run, config = done.model, done.run, done.config
    samples, selection_accuracy = coefficient_samples(model, select)
    mean_coeffs, num_samples = samples.mean(axis=0, dtype=np.float64), samples.shape[0]
    genotype, pareto = select_values(model, select, mean_coeffs, config.rule, done.source, done.remedies,
                                     config.budget, costs)
    confidence = selection_confidence(samples, seed=config.seed, rule=config.rule)
    report = search_report(initial_coeffs, mean_coeffs, confidence, config.rule)
    for line in report["lines"]:
        print(line)
    plots = []
    timing = done.timing(selection_accuracy)
    if done.keep_files:
        rd.save_weights_atomic(model, run.supernet_weights)
        run.write_attention(mean_coeffs, num_samples, confidence)
        run.write_diagnostics(report)
        run.write_genotype(genotype)
        done.write_hparams({"selection_accuracy": selection_accuracy, "mean_abs_drift": report.get("mean_abs_drift")})
        plots = write_run_plots(run.path)  # Fig. 4 heatmaps, Appendix A cell diagrams
        if pareto is not None:
            run.write_pareto(pareto)
            path = os.path.join(run.plots, rd.PARETO_PLOT_FILE)
            plot_pareto(pareto, path)
            plots.append(path)
        run.write_timing(timing)
        write_operative_config(run.path)
    return SearchResult(genotype=genotype, coefficients=np.asarray(mean_coeffs), selection_accuracy=selection_accuracy,
                        history=done.history.history, model=model, model_dir=run.path, plots=plots, timing=timing,
                        diagnostics=report)


def rsps_select_and_write(done, subset):
    """RSPS's end: the best of `rsps_candidates` sampled architectures on the shared weights (`rsps.py`)."""
    model, run, candidates = done.model, done.run, done.config.rsps_candidates
    num_cells = model.get_layer(PATH_SAMPLER).num_cells
    genotype, record = rsps_select(model, subset, num_cells, done.source["seed"], candidates, done.source)
    print(f"RSPS: best of {candidates} sampled architectures: candidate {record['best']}, shared-weights "
          f"accuracy {record['best_accuracy']:.4f} (median {np.median(record['accuracies']):.4f})")
    timing = done.timing(record["best_accuracy"])
    plots = []
    if done.keep_files:
        rd.save_weights_atomic(model, run.supernet_weights)
        run.write_rsps(record)
        run.write_genotype(genotype)
        done.write_hparams({"selection_accuracy": record["best_accuracy"]})
        plots = write_run_plots(run.path)
        run.write_timing(timing)
        write_operative_config(run.path)
    return SearchResult(genotype=genotype, selection_accuracy=record["best_accuracy"], history=done.history.history,
                        model=model, model_dir=run.path, plots=plots, timing=timing, diagnostics={"rsps": record})


def select_values(model, select, mean_coeffs, rule, source, remedies, budget=Budget(), costs=None):
    """(genotype, pareto record or None): from the mean coefficients or perturbation scores, within `budget`."""
    space = search_space()
    values = mean_coeffs
    if remedies.selection == "perturbation":
        images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in select])
        excluded = [space.index("zero")] if remedies.exclude_zero else []
        values, baseline = perturbation_scores(model, np.concatenate(images), np.concatenate(labels), mean_coeffs,
                                               space, remedies.perturbation_top_k, excluded)
        print(f"Perturbation selection: supernet accuracy {baseline:.4f} on {sum(len(y) for y in labels)} "
              f"selection images; each edge's top {remedies.perturbation_top_k} ops removed in turn")
        if budget.active:
            values = unscored_below(values)
    if not budget.active:
        return select_genotype(values, rule, source, space, exclude_zero=remedies.exclude_zero,
                               max_parameter_free=remedies.max_parameter_free), None
    allowed = tuple(not (remedies.exclude_zero and name == "zero") for name in space.primitives)
    problem = Problem(np.asarray(values, np.float64), costs, rule, allowed, remedies.max_parameter_free)
    genotype = select_genotype(values, rule, source, space, exclude_zero=remedies.exclude_zero,
                               max_parameter_free=remedies.max_parameter_free, budget=(costs, budget))
    choices = genotype_choices(genotype, space)
    params, macs = costs.of_choices(choices)
    chosen = {"score": budget_score(problem, choices), "params": params, "multiply_adds": macs}
    genotype = dataclasses.replace(genotype, source={**genotype.source, "budget": dataclasses.asdict(budget),
                                                     "cost": {"params": params, "multiply_adds": macs}})
    print(f"Budget {budget.describe()}: picked {params:,} parameters, {macs / 1e6:.2f} M multiply-adds "
          f"(selection score {chosen['score']:.4f}); Pareto front in {rd.PARETO_FILE}")
    return genotype, front_record(pareto_front(problem, points=8), chosen, budget, costs, space)
