"""``lsi compute``: score samples from a features file, a data set, or the embedded digits."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch

from lsi.api import compute_lsi
from lsi.defaults import LSI, PAPER, SUI
from lsi.enums import DType, Hessian, Probe, Solver
from lsi.probes import ACTIVATIONS
from lsi.results import check_writable, save_table

DEFAULTS = {**LSI, **PAPER, "activation": "relu"}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compute", help="compute LSI for every sample (or a shard) and write a Parquet table",
        description="Compute Laplace Sample Information. Input: --features F.npz (arrays 'features' "
                    "n x d and 'labels' n), or --dataset NAME [--extractor E] (cached features), or "
                    f"--dataset digits (embedded). Defaults are the paper's: {DEFAULTS['probe']} probe, "
                    f"lr {PAPER['lr']}, momentum {PAPER['momentum']}, weight decay {PAPER['weight_decay']}, "
                    f"{PAPER['epochs']} epochs, {DEFAULTS['hessian']} Hessian.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--features", type=Path, help=".npz file with arrays 'features' and 'labels'")
    source.add_argument("--dataset", help="a registered data set name (see lsi features --help), e.g. digits")
    parser.add_argument("--extractor", help="feature extractor for --dataset (default: the offline one)")
    parser.add_argument("--split", default="train", help="data set split for --dataset")
    parser.add_argument("--limit", type=int, help="stratified random subset of this many samples")
    parser.add_argument("--corruption", default=None,
                        help="corrupt --dataset first (seeded by --seed): flip[:fraction] | lorem[:n] | "
                             "noise:class:variance | human[:aggre|worse|random1..3]; the table gains the columns "
                             "'corrupted' and, for label corruptions, 'original_label'")
    parser.add_argument("--components", type=int, default=0,
                        help="project the features onto their top N principal components first (unsupervised; "
                             "the CIFAR-10 chapter's probe: 256); 0 keeps them all")
    parser.add_argument("--out", type=Path, required=True, help="output Parquet file")
    parser.add_argument("--measure", choices=["lsi", "sui"], default="lsi", help="which measure to compute")
    parser.add_argument("--l2", type=float, default=SUI["cli_l2"],
                        help="SUI only: L2 regularisation of the linearised network (needed when the kernel is singular)")
    parser.add_argument("--probe", choices=_values(Probe), default=DEFAULTS["probe"])
    parser.add_argument("--hidden", type=int, default=DEFAULTS["hidden"], help="MLP hidden width")
    parser.add_argument("--activation", choices=list(ACTIVATIONS), default=DEFAULTS["activation"],
                        help="MLP hidden activation; relu (the paper's) needs --solver gd, gelu/softplus also "
                             "work with converged")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="epochs of the gd solver")
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--momentum", type=float, default=DEFAULTS["momentum"])
    parser.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    parser.add_argument("--solver", choices=_values(Solver), default=DEFAULTS["solver"],
                        help="gd: the paper's training; converged: exact LOO optima; newton-step: screening; "
                             "warm-start: first-order converged for networks")
    parser.add_argument("--hessian", choices=_values(Hessian), default=DEFAULTS["hessian"])
    parser.add_argument("--prior-precision", type=float, default=None,
                        help="fixed prior precision (authors' code: 1.0); default m * weight decay")
    parser.add_argument("--indices", help="score only positions a:b (shard the work; join with lsi merge)")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    parser.add_argument("--device", default=DEFAULTS["device"], help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", choices=_values(DType), default=DEFAULTS["dtype"])
    parser.add_argument("--memory-budget", default=DEFAULTS["memory_budget"],
                        help="memory for one chunk of leave-one-out models. What they share comes on top: the "
                        "features and, for the second-order solvers, the full-data K x K Hessian and its inverse "
                        "(K = (d + 1) C parameters, 8 K^2 bytes each: 1.3 GB each at d = 1,280, C = 10)")
    parser.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                        help="spread the chunks over a Ray cluster at ADDRESS (host:port; auto: the one "
                             "'ray start' runs here; ray://...); without ADDRESS start a new local one. Finished "
                             "chunks are kept in OUT.parts, so rerunning the command reuses them")
    parser.add_argument("--threads", type=int,
                        help="CPU threads of this process and, with --ray, of each task (default: torch's; "
                             "1 with --ray). A table is bit-identical to another run's at the same thread count")
    parser.add_argument("--on-nonfinite", choices=["raise", "flag"], default="raise",
                        help="a sample whose score is NaN or inf (diverged training, float32 overflow): an error "
                             "naming it, or keep the row and mark it in the column 'nonfinite'")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _values(choices) -> list[str]:
    """The accepted spellings of an option: the values of its :mod:`lsi.enums` enum."""
    return [choice.value for choice in choices]


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Features, labels and optional ids from an ``.npz`` file, with clear errors."""
    if not path.is_file():
        raise FileNotFoundError(f"features file {path} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"features", "labels"} - set(data.files)
            if missing:
                raise KeyError(f"{path} lacks array(s) {sorted(missing)}; it has {sorted(data.files)}. "
                               f"Save with np.savez(path, features=X, labels=y).")
            return data["features"], data["labels"], data["ids"] if "ids" in data.files else None
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable .npz file: {error}") from error


def load_inputs(args) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict, dict]:
    """Features, labels, ids, the data's provenance, and per-sample columns a corruption adds."""
    embedded_digits = args.dataset == "digits" and args.extractor is None
    if args.corruption is not None and (args.features is not None or embedded_digits):
        raise ValueError("--corruption needs --dataset with cached encoder features (not --features, not the "
                         "embedded digits pixels); corrupt an .npz file's labels before saving it instead.")
    if args.features is not None:
        X, y, ids = load_npz(args.features)
        return X, y, ids, {"source": str(args.features)}, {}
    if embedded_digits:
        from lsi.data import digits_pixels
        X, y, ids = digits_pixels()
        return X, y, ids, {"source": "lsi.data.digits_pixels (sklearn digits, uint8 pixels / 255)"}, {}
    from lsi.features import extract_features
    fs = extract_features(args.dataset, **({"extractor": args.extractor} if args.extractor else {}),
                          split=args.split, limit=args.limit, seed=args.seed, corruption=args.corruption,
                          device=args.device, progress=not args.quiet)
    if args.corruption is None:
        return fs.features, fs.labels, fs.ids, fs.meta, {}
    return fs.features, fs.labels, fs.ids, {**fs.meta, "corruption": args.corruption}, corruption_columns(fs)


def corruption_columns(fs) -> dict[str, np.ndarray]:
    """Per-position columns of a corrupted feature set: ``corrupted`` and, if labels changed, ``original_label``."""
    columns = {"corrupted": np.isin(np.arange(len(fs)), fs.changed)}
    if fs.clean_labels is not None:
        columns["original_label"] = np.asarray(fs.clean_labels)
    return columns


def thread_count(args) -> int | None:
    """This process's (and each Ray task's) CPU threads: ``--threads``, else 1 with ``--ray``, else None (torch's)."""
    threads = args.threads if args.threads is not None else (1 if args.ray is not None else None)
    if threads is not None and threads < 1:
        raise ValueError(f"--threads {threads}: must be at least 1.")
    return threads


def executor(args, threads: int | None):
    """The chunks' executor: ``None`` (here, one after another) or a Ray one whose tasks use ``threads``."""
    if args.ray is None:
        return None
    from lsi.distributed import RayExecutor
    return RayExecutor(args.ray or None, threads=threads, device=args.device)


def project(X: np.ndarray, components: int, source: dict) -> tuple[np.ndarray, dict]:
    """``X`` on its top ``components`` principal components (:func:`lsi.stats.principal_components`;
    0 keeps ``X``), with the projection recorded in the data's provenance."""
    if components == 0:
        return X, source
    from lsi.stats import principal_components
    return principal_components(X, components), {**source, "principal_components": components}


def run(args) -> int:
    if args.components < 0:  # before any feature extraction
        raise ValueError(f"--components {args.components}: must be >= 0 (0 keeps all the features).")
    from lsi.features import _threads

    check_writable(args.out)
    threads = thread_count(args)
    with _threads(threads):  # also governs feature extraction; the caller's thread count is restored on return
        return _compute_and_save(args, executor(args, threads))


def _compute_and_save(args, chunks) -> int:
    X, y, ids, source, columns = load_inputs(args)
    X, source = project(X, args.components, source)
    common = dict(indices=args.indices, seed=args.seed, device=args.device, dtype=args.dtype,
                  progress=not args.quiet, ids=ids, executor=chunks, on_nonfinite=args.on_nonfinite)
    checkpoint = args.out.with_name(args.out.name + ".parts")
    if args.measure == "sui":
        from lsi.sui import compute_sui_features
        table = compute_sui_features(X, y, probe=args.probe, hidden=args.hidden, l2=args.l2,
                                     memory_budget=args.memory_budget, checkpoint=str(checkpoint), **common)
    else:
        table = compute_lsi(X, y, probe=args.probe, hidden=args.hidden, activation=args.activation,
                            solver=args.solver, hessian=args.hessian,
                            epochs=args.epochs, lr=args.lr, momentum=args.momentum,
                            weight_decay=args.weight_decay, prior_precision=args.prior_precision,
                            memory_budget=args.memory_budget, checkpoint=checkpoint, **common)
    for column, values in columns.items():
        table[column] = values[table["index"].to_numpy()]
    table.attrs["lsi"]["data"] = source
    table.attrs["lsi"]["execution"] = {"threads": torch.get_num_threads(),
                                       "ray": None if args.ray is None else (args.ray or "local")}
    save_table(table, args.out)
    shutil.rmtree(checkpoint, ignore_errors=True)
    print(f"wrote {len(table)} rows to {args.out}")
    score = "lsi" if args.measure == "lsi" else "sui_weight"
    top = table.nlargest(10, score)[["index", "id", "label", score]]
    print("most informative samples:\n" + top.to_string(index=False))
    return 0
