"""Does the attention learn? Searches of the attention options, two seeds each (issue 13).

For every variant of the attention module (`build_supernet.attention_*`)
and seed, one search of the demo's supernet (4 cells, C = 8) on real
Fashion-MNIST, each in its own process and run directory under --work_dir
(resumed if stopped). Every finished (variant, seed) is appended to
--results as one JSON line, and a rerun skips what is there. The summary
prints, per variant: the argmax kept from initialisation, the coefficient
drift, the cross-seed agreement of the genotypes (chance is 1/8 = 0.125),
the bootstrap-confident edges, and the gradient reaching T1..T4 against the
ops' weights.

    python bench/attention_learning.py --work_dir=/tmp/attn --results=docs/attention-learning.jsonl
"""

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = {
    "paper": {},
    "lr30": {"attention_lr_multiplier": 30.0},
    "pre_bn_lr30": {"attention_embedding": "pre_bn", "attention_lr_multiplier": 30.0},
    "pre_bn_zero_lr30": {"attention_embedding": "pre_bn", "attention_init": "zero_output",
                         "attention_lr_multiplier": 30.0},
    "pre_bn": {"attention_embedding": "pre_bn"},
    "lr100": {"attention_lr_multiplier": 100.0},
    "pre_bn_zero_lr100": {"attention_embedding": "pre_bn", "attention_init": "zero_output",
                          "attention_lr_multiplier": 100.0},
    "zero_lr100": {"attention_init": "zero_output", "attention_lr_multiplier": 100.0},
    "lr300": {"attention_lr_multiplier": 300.0},
    "zero_lr300": {"attention_init": "zero_output", "attention_lr_multiplier": 300.0},
    "lr1000": {"attention_lr_multiplier": 1000.0},
    # The reference point: DARTS first order on the same supernet and budget.
    "darts1": {"method": "darts1"},
}


def run_one(variant, seed, args):
    """One search in this process; returns its result line."""
    import numpy as np

    from asmnas_tf.data import load_arrays
    from asmnas_tf.supernet.diagnostics import argmax_ops
    from asmnas_tf.supernet.runner import search

    arrays = load_arrays("fashion_mnist", train_subset=args.images)
    model_dir = os.path.join(args.work_dir, f"{variant}-seed{seed}")
    os.makedirs(model_dir, exist_ok=True)
    started = time.perf_counter()
    options = dict(VARIANTS[variant])
    method = options.pop("method", "asm")
    result = search(arrays, method=method, epochs=args.epochs, batch_size=32, num_cells=4, channels=8,
                    supernet_options=options, seed=seed, model_dir=model_dir, verbose=0)
    report = result.diagnostics
    history = result.history
    return {
        "variant": variant, "seed": seed, "options": VARIANTS[variant], "epochs": args.epochs,
        "images": args.images, "wall_s": round(time.perf_counter() - started, 1),
        "selection_accuracy": result.selection_accuracy,
        "argmax": argmax_ops(result.coefficients).tolist(),
        **{k: report[k] for k in ("initial_final_agreement", "mean_abs_drift", "initial_spread", "final_spread",
                                  "parameter_free_share", "confident_choices", "choices", "median_margin")},
        "attention_grad_norm": history.get("attention_grad_norm"),
        "ops_grad_norm": history.get("ops_grad_norm"),
        "embedding_std": history.get("embedding_std"),
        "argmax_changes": history.get("argmax_changes"),
    }


def summarise(lines):
    import numpy as np

    by_variant = {}
    for line in lines:
        by_variant.setdefault(line["variant"], []).append(line)
    print("variant | seeds | init->final kept | drift | cross-seed agreement | confident edges | "
          "|g_T| / |g_ops| (last epoch) | selection acc")
    for variant, runs in by_variant.items():
        argmaxes = [np.array(r["argmax"]) for r in runs]
        pairs = [float(np.mean(a == b)) for i, a in enumerate(argmaxes) for b in argmaxes[i + 1:]]
        ratio = [r["attention_grad_norm"][-1] / r["ops_grad_norm"][-1] if r["attention_grad_norm"] else float("nan")
                 for r in runs]
        print(f"{variant} | {len(runs)} | {np.mean([r['initial_final_agreement'] for r in runs]):.3f} | "
              f"{np.mean([r['mean_abs_drift'] for r in runs]):.4f} | "
              f"{np.mean(pairs) if pairs else float('nan'):.3f} | "
              f"{np.mean([r['confident_choices'] or 0 for r in runs]):.1f} / {runs[0]['choices']} | "
              f"{np.mean(ratio):.4f} | {np.mean([r['selection_accuracy'] for r in runs]):.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        variant, seed = args.one.split(":")
        print(json.dumps(run_one(variant, int(seed), args)))
        return
    done = []
    if os.path.exists(args.results):
        with open(args.results, encoding="utf-8") as f:
            done = [json.loads(line) for line in f if line.strip()]
    for variant in args.variants.split(","):
        for seed in map(int, args.seeds.split(",")):
            if any(d["variant"] == variant and d["seed"] == seed and d["epochs"] == args.epochs
                   and d["images"] == args.images for d in done):
                continue
            command = [sys.executable, __file__, f"--one={variant}:{seed}", f"--work_dir={args.work_dir}",
                       f"--results={args.results}", f"--epochs={args.epochs}", f"--images={args.images}"]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            line = json.loads(output.strip().splitlines()[-1])
            done.append(line)
            with open(args.results, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
            print(f"{variant} seed {seed}: kept {line['initial_final_agreement']:.3f}, "
                  f"drift {line['mean_abs_drift']:.4f}, {line['wall_s']} s", flush=True)
    summarise(done)


if __name__ == "__main__":
    main()
