"""Search telemetry per epoch: a cheap selection on a fixed subset.

At the end of every epoch the supernet (inference mode, nothing updated)
runs on a fixed subset of the selection split; from its mean coefficients
come the epoch's columns of history.csv and TensorBoard (`diagnostics.py`:
normalised entropy, parameter-free share, argmax changes since the last
epoch), one line of `genotypes.jsonl` (the epoch's genotype and its mean
coefficients) and a heatmap image in TensorBoard. For ASM it also measures
what the attention modules see (eq. 4.3): the spread over the subset's
samples of each op's embedding e_k, with the edge's BatchNorms on the
subset's own statistics, as in training (`MixedEdge.embeddings`).
"""

import json
import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from asmnas_tf.layers.mixed_edge import EMBEDDINGS, MixedEdge
from asmnas_tf.rundir.run_dir import write_text_atomic
from asmnas_tf.space.genotype import to_dict
from asmnas_tf.space.search_space import search_space
from asmnas_tf.supernet import diagnostics
from asmnas_tf.supernet.model import COEFFICIENTS, LOGITS
from asmnas_tf.supernet.selection import select_genotype



def read_epoch_lines(path):
    """The lines of genotypes.jsonl as dicts ([] when there is none)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class SearchTelemetry(keras.callbacks.Callback):
    """Adds the epoch's selection figures to the logs; writes genotypes.jsonl and a TensorBoard image.

    `subset`: a finite dataset of (x, y) batches of the selection split;
    `initial`: the mean coefficients at initialisation (the baseline of the
    first epoch's `argmax_changes`); `path`, `tensorboard_dir`: where to
    write (None: only the logs). Put it before the writers of history.csv.
    """

    def __init__(self, subset, initial, rule, source, path=None, tensorboard_dir=None, space=None):
        super().__init__()
        self.space = search_space() if space is None else space
        self.subset = subset
        self.initial = initial
        self.rule = rule
        self.source = source
        self.path = path
        self.tensorboard_dir = tensorboard_dir
        self._probe = None
        self._writer = None
        self._last = None  # (epoch, mean coefficients) of the last epoch measured

    def _build_probe(self):
        """One traced function for the run: coefficients, logits and every attention edge's E."""
        edges = [layer for layer in self.model.layers if isinstance(layer, MixedEdge) and layer.mixing == "attention"]
        outputs = [self.model.output[COEFFICIENTS], self.model.output[LOGITS]] + [edge.input for edge in edges]
        features = keras.Model(self.model.inputs, outputs)

        @tf.function(reduce_retracing=True)
        def probe(x):
            coefficients, logits, *inputs = features(x, training=False)
            embeddings = [edge.embeddings(inp, training=True) for edge, inp in zip(edges, inputs)]
            return coefficients, logits, {s: [e[s] for e in embeddings] for s in EMBEDDINGS}

        return probe, edges

    def measure(self):
        """(mean coefficients [L, 14, |O|], accuracy, embedding figures or None) on the subset."""
        if self._probe is None:
            self._probe = self._build_probe()
        probe, edges = self._probe
        coefficients, hits, count = [], 0, 0
        spreads = {s: [] for s in EMBEDDINGS}
        for x, y in self.subset:
            c, logits, embeddings = probe(x)
            coefficients.append(np.asarray(c, np.float64))
            hits += int(np.sum(np.argmax(np.asarray(logits), axis=-1) == np.asarray(y)))
            count += len(y)
            for s in EMBEDDINGS if edges else ():
                spreads[s].append(np.stack([np.asarray(e) for e in embeddings[s]], axis=1))  # [B, edges, |O|]
        mean = np.concatenate(coefficients).mean(axis=0)
        figures = None
        if edges:
            figures = {}
            for s in EMBEDDINGS:
                e = np.concatenate(spreads[s])  # [N, edges, |O|]
                figures[s] = {"std": np.median(e.std(axis=0), axis=0).tolist(),  # per op, median over edges
                              "mean_abs": np.median(np.abs(e.mean(axis=0)), axis=0).tolist()}
            figures["used"] = edges[0].embedding
        return mean, hits / max(count, 1), figures

    def _previous(self, epoch, lines):
        """The mean coefficients after epoch `epoch` (1-based; 0: initialisation), from memory or the file."""
        if self._last is not None and self._last[0] == epoch:
            return self._last[1]
        if lines and lines[-1]["epoch"] == epoch:
            return np.asarray(lines[-1]["coefficients"])  # a resumed run: the line the first run wrote
        return self.initial

    def on_epoch_end(self, epoch, logs=None):
        started = time.perf_counter()
        mean, subset_accuracy, embeddings = self.measure()
        # Lines of later epochs are dropped: a run resumed before them redoes them.
        lines = [line for line in read_epoch_lines(self.path) if line["epoch"] <= epoch] if self.path else []
        figures = diagnostics.epoch_figures(mean, self._previous(epoch, lines), self.space)
        self._last = (epoch + 1, mean)
        figures["subset_accuracy"] = subset_accuracy
        if embeddings:
            used = embeddings[embeddings["used"]]["std"]
            zero = self.space.index("zero") if self.space.has_zero else -1
            figures["embedding_std"] = float(np.median([v for k, v in enumerate(used) if k != zero]))
        if logs is not None:
            logs.update(figures)
        genotype = select_genotype(mean, self.rule, self.source, self.space)
        line = {"epoch": epoch + 1, **figures, "genotype": to_dict(genotype),
                "coefficients": np.round(mean, 6).tolist(), "embeddings": embeddings,
                "telemetry_s": round(time.perf_counter() - started, 3)}
        if self.path:
            write_text_atomic(self.path, "".join(json.dumps(item) + "\n" for item in lines + [line]))
        if self.tensorboard_dir:
            self._write_image(epoch + 1, mean)

    def _write_image(self, step, mean):
        from asmnas_tf.plots import plot_attention_heatmaps  # matplotlib only where images are written

        with tempfile.TemporaryDirectory() as scratch:
            png = os.path.join(scratch, "coefficients.png")
            plot_attention_heatmaps(mean, png, title=f"Mean coefficients after epoch {step} (telemetry subset)")
            with open(png, "rb") as f:
                image = tf.image.decode_png(f.read())
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.tensorboard_dir, "telemetry"))
        with self._writer.as_default():
            tf.summary.image("coefficients", image[None], step=step)
        self._writer.flush()
