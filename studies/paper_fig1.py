"""Paper figure 1 (section 3.1), reproduced: other activations' derivatives in place of ReLU's at FC2.

Target ``gaussians-mlp3``: two Gaussian classes (means +1 and -1, unit variance),
Input -> FC1 -> ReLU -> FC2 -> ReLU -> FC3 -> softmax, 16 hidden units, no biases. Only FC2's
weights train (the rest frozen); the backward pass uses ``g`` in place of ReLU' at the activation
after FC2 (``act2``). Adam, lr 0.1, 100 epochs, full batch, cross-entropy.

Writes into ``studies/paper_fig1/``:
  fig1a_bfunctions.png   the b-functions g(z) (paper Fig. 1a)
  fig1b_loss.png         training loss of each b-function over the seeds (paper Fig. 1b)
  fig1c_alignment.png    cosine between the true FC2 gradient and the applied one (seed 0)
  fig1_results.csv       final loss, AULC, test accuracy, mean cosine per b-function and seed

Run: ``python studies/paper_fig1.py [--seeds 5]`` (about 15 s on one core of a busy 2-core machine).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import metabp
from metabp import plots
from metabp.analysis import alignment_run
from metabp.targets import get_target, train

OUT = Path(__file__).with_suffix("")
BFUNCTIONS = {  # label -> g, in place of relu'
    "relu' (backprop)": metabp.Derivative("relu"),
    "sigmoid'": metabp.Derivative("sigmoid"),
    "tanh'": metabp.Derivative("tanh"),
    "softplus'": metabp.Derivative("softplus"),
    "leaky_relu'": metabp.Derivative("leaky_relu", negative_slope=0.01),
    "elu'": metabp.Derivative("elu"),
    "linear' (= 1)": metabp.Derivative("linear"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="initial weights to average over")
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = get_target("gaussians-mlp3", trainable="fc2.*", optimizer="adam", lr=0.1, epochs=100,
                      batch_size=None)
    args.output.mkdir(parents=True, exist_ok=True)

    styles = {"relu' (backprop)": {"color": "k", "lw": 2.5, "ls": "--"}}
    plots.plot_bfunctions(BFUNCTIONS, "relu", args.output / "fig1a_bfunctions.png", styles=styles,
                          title="Fig. 1a: b-functions in place of ReLU' at FC2")
    curves, rows, cosines = {}, [], {}
    with tqdm(total=len(BFUNCTIONS) * (args.seeds + 1), desc="paper fig 1", unit="run") as bar:
        for label, g in BFUNCTIONS.items():
            curves[label] = []
            for seed in range(args.seeds):
                run = train(spec, g, "act2", seed)
                curves[label].append(run.step_losses)
                rows.append({"bfunction": label, "seed": seed, "final_loss": run.step_losses[-1],
                             "aulc": run.aulc, "test_accuracy": run.test_accuracy, "diverged": run.diverged})
                bar.update()
            trace = alignment_run(spec, g, where="act2", seed=0)
            cosines[label] = trace.cosines["fc2"]
            rows[-args.seeds]["mean_cos_fc2_seed0"] = float(np.nanmean(trace.cosines["fc2"]))
            bar.update()
    plots.plot_loss_curves(curves, args.output / "fig1b_loss.png", xlabel="epoch (full batch)", styles=styles,
                           title=f"Fig. 1b: only FC2 trains, Adam 0.1; "
                                 f"mean, min-max over {args.seeds} seeds")
    plots.plot_alignment(cosines, args.output / "fig1c_alignment.png",
                         title="cos(true FC2 gradient, applied FC2 gradient), seed 0")
    with (args.output / "fig1_results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["bfunction", "seed", "final_loss", "aulc", "test_accuracy", "diverged",
                               "mean_cos_fc2_seed0"])
        w.writeheader()
        w.writerows(rows)

    print(f"\n| b-function | final loss (mean ± std over {args.seeds} seeds) | AULC | test acc | "
          "mean cos(FC2), seed 0 |")
    print("|---|---:|---:|---:|---:|")
    for label in BFUNCTIONS:
        mine = [r for r in rows if r["bfunction"] == label]
        fl = np.array([r["final_loss"] for r in mine])
        au = np.array([r["aulc"] for r in mine])
        acc = np.array([r["test_accuracy"] for r in mine])
        cos = mine[0].get("mean_cos_fc2_seed0", math.nan)
        print(f"| {label} | {fl.mean():.4f} ± {fl.std(ddof=1) if len(fl) > 1 else 0:.4f} | {au.mean():.4f} | "
              f"{acc.mean():.3f} | {cos:.3f} |")


if __name__ == "__main__":
    main()
