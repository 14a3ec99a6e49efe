"""``lsi compare``: LSI next to its peers on one features file, and how well each finds wrong labels."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lsi.cli.compute import load_npz
from lsi.compare import METHODS, detection, parse_methods, scores
from lsi.defaults import COMPARE, LSI, PAPER
from lsi.enums import Hessian, Solver
from lsi.results import atomic_write_bytes, check_writable, save_table
from lsi.validation import check_features, check_labels, check_mask, check_positive


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", help="score samples with LSI and its peers (loss, cleanlab, TRAK, ...) side by side",
        description="Score every sample of --features F.npz (arrays 'features' n x d, 'labels' n, optionally "
                    "'flipped', a boolean mask of known-wrong labels) with each of --methods, from the same "
                    "linear probe. Every column is oriented 'higher = more likely mislabelled / more "
                    "informative'. With 'flipped', prints and writes OUT.summary.csv: AUROC, average "
                    "precision, precision at k (k = number flipped) and wall time per method.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--features", type=Path, required=True, help=".npz with 'features', 'labels' [, 'flipped']")
    parser.add_argument("--methods", required=True,
                        help=f"comma-separated, from: {', '.join(METHODS)}; lsi:<tier> picks an LSI tier")
    parser.add_argument("--out", type=Path, required=True, help="output Parquet file (one column per method)")
    parser.add_argument("--solver", choices=[s.value for s in Solver], default=LSI["solver"],
                        help="LSI tier of the method 'lsi'")
    parser.add_argument("--hessian", choices=[h.value for h in Hessian], default=LSI["hessian"])
    parser.add_argument("--weight-decay", type=float, default=PAPER["weight_decay"],
                        help="of the shared probe, all parameters")
    parser.add_argument("--folds", type=int, default=COMPARE["folds"],
                        help="cleanlab: folds of the out-of-fold probabilities")
    parser.add_argument("--sui-l2", type=float, default=COMPARE["sui_l2"], help="sui: L2 of the linearised model")
    parser.add_argument("--trak-proj-dim", type=int, default=COMPARE["trak_proj_dim"],
                        help="trak: dimension of the random projection")
    parser.add_argument("--psmi-estimators", type=int, default=COMPARE["psmi_estimators"],
                        help="psmi: number of random directions")
    parser.add_argument("--seed", type=int, default=PAPER["seed"])
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def check_options(args) -> None:
    """The options' values, before any file is read: a clear error for each bad one."""
    parse_methods(args.methods)
    for option, value, least in (("--folds", args.folds, 2), ("--trak-proj-dim", args.trak_proj_dim, 1),
                                 ("--psmi-estimators", args.psmi_estimators, 1)):
        if value < least:
            raise ValueError(f"{option} {value}: must be at least {least}.")
    check_positive(args.weight_decay, name="--weight-decay")
    check_positive(args.sui_l2, name="--sui-l2")
    check_writable(args.out)


def check_every_class_present(y: np.ndarray) -> None:
    """Labels ``0..C-1`` with every class present: cleanlab's folds and the detection scores need each class."""
    missing = np.setdiff1d(np.arange(y.max() + 1), y)
    if len(missing):
        raise ValueError(f"labels skip class(es) {missing[:5].tolist()} of 0..{y.max()}; encode the classes "
                         f"present as 0..C-1, e.g. np.unique(labels, return_inverse=True)[1].")


def run(args) -> int:
    check_options(args)
    X, y, _ = load_npz(args.features)
    X = check_features(X)
    y, _ = check_labels(y, len(X))
    check_every_class_present(y)
    with np.load(args.features, allow_pickle=False) as data:
        flipped = check_mask(data["flipped"], len(X)) if "flipped" in data.files else None
    table = scores(X, y, args.methods, solver=args.solver, hessian=args.hessian, weight_decay=args.weight_decay,
                   folds=args.folds, sui_l2=args.sui_l2, trak_proj_dim=args.trak_proj_dim,
                   psmi_estimators=args.psmi_estimators, seed=args.seed, progress=not args.quiet)
    table.attrs["lsi"]["data"] = {"source": str(args.features)}
    summary = None if flipped is None else detection(table, flipped)  # before anything is written
    save_table(table, args.out)
    print(f"wrote {len(table)} rows x {table.shape[1]} methods to {args.out}")
    if summary is not None:
        path = args.out.with_name(args.out.stem + ".summary.csv")
        atomic_write_bytes(path, summary.to_csv().encode())
        print(f"finding the {int(flipped.sum())} flipped labels among {len(table)}:")
        print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
        print(f"wrote {path}")
    return 0
