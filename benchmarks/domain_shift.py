"""Domain-shift accuracy benchmark (benchmarks.md, section 1): the paper's claim, measured.

Every adaptation method (source-only, AdaBN, DANN, MADA, warp, Cryo-Shift, oracle) is trained
with the same backbone, data and budget on labelled simulated source data plus unlabelled
target data, over several seeds, for each target domain (benchmarks/domains.py). Target
labels are read only here, after training, to score; the oracle alone trains with them.
``--methods`` takes any registered method, an installed plugin's too (same budget).

Writes ``benchmarks/results/domain_shift_<profile>.json`` and ``.md`` plus a few PNGs
(confusion matrices, feature embeddings) under ``benchmarks/results/domain_shift_<profile>/``.
Runs are cached in the work directory, so an interrupted benchmark resumes where it stopped; the
data (each simulated split, each ``--target-dataset`` split) and each run keep the settings that made
them and are refused under others (another profile, budget, TrainConfig default, method default or
plugin version, another dataset). ``--out DIR`` writes the results elsewhere; a run lacking
(target, method, seed) cells of the results file it would replace is refused without ``--replace``.

    .venv/bin/python benchmarks/domain_shift.py --profile cpu
    .venv/bin/python benchmarks/domain_shift.py --profile tiny --work /tmp/ds_tiny
    .venv/bin/python benchmarks/domain_shift.py --profile cpu --target-dataset my_labelled_set/
    # two single-threaded workers, then the report (everything cached):
    for i in 0 1; do .venv/bin/python benchmarks/domain_shift.py --profile cpu --shard $i/2 --threads 1 & done
    wait; .venv/bin/python benchmarks/domain_shift.py --profile cpu
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import domain_data
import domain_metrics as dm
import domain_plots
from _cache import check_cached, read_settings, settings_differ, write_settings
from accuracy import replace_refusal
from accuracy import run_settings as config_settings
from domains import METHODS, PROFILES, SOURCE, TARGET_NOTES, TARGETS, Profile

RESULTS = Path(__file__).resolve().parent / "results"


def _machine() -> dict[str, Any]:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import subprocess

    from cryoshift.runtime import __version__

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "git_commit": commit,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cryoshift": __version__,
    }


def score_run(
    run_dir: Path, test: domain_data.Split, source_val: domain_data.Split, num_classes: int
) -> dict[str, Any]:
    """Score the label-free selected model and every saved checkpoint on the held-out target."""
    from cryoshift.training.checkpoint import RUN_MODEL

    selected = domain_data.predict(run_dir / RUN_MODEL, test.volumes)
    record: dict[str, Any] = {
        "accuracy": dm.accuracy(test.labels, selected.pred),
        "macro_f1": dm.macro_f1(test.labels, selected.pred, num_classes),
        "confusion": dm.confusion(test.labels, selected.pred, num_classes).tolist(),
        "source_val_accuracy": dm.accuracy(
            source_val.labels, domain_data.predict(run_dir / RUN_MODEL, source_val.volumes).pred
        ),
    }
    # What target labels would have chosen among the same epoch checkpoints (reported, never used).
    from cryoshift.training.evaluate import checkpoint_epochs

    record["checkpoint_accuracy"] = {
        path.name: dm.accuracy(test.labels, domain_data.predict(path, test.volumes).pred)
        for _, path in checkpoint_epochs(run_dir)
    }
    selection = run_dir / "selection.json"
    if selection.is_file():
        sel = json.loads(selection.read_text())
        record["selected_epoch"] = sel.get("selected_epoch")
        record["selection_rule"] = sel.get("rule")
    return label_chosen(record)


def label_chosen(record: dict[str, Any]) -> dict[str, Any]:
    """Add the best epoch checkpoint by target accuracy (what the labels would have chosen)."""
    selection = Path(record.get("run_dir", "")) / "selection.json"
    if "selected_epoch" not in record and selection.is_file():  # records of an older harness
        sel = json.loads(selection.read_text())
        record["selected_epoch"], record["selection_rule"] = sel.get("selected_epoch"), sel.get("rule")
        record.pop("selected", None)
    per_ckpt = {k: v for k, v in record.get("checkpoint_accuracy", {}).items() if k.startswith("epoch_")}
    if per_ckpt:
        best = max(per_ckpt, key=lambda k: (per_ckpt[k], k))
        record["accuracy_label_chosen"] = per_ckpt[best]
        record["label_chosen_checkpoint"] = best
    return record


# The profile settings the simulated data depend on (the data cache of --work is refused under others).
DATA_FIELDS = (
    "structures",
    "box_size",
    "voxel_size",
    "n_source",
    "n_source_val",
    "n_target",
    "n_target_test",
    "source_overrides",
)


def check_data_cache(profile: Profile, data_dir: Path, targets: list[str]) -> None:
    """Refuse a data cache simulated with other settings, before any of it is reused; record this
    run's settings (those of targets simulated by an earlier run with other targets are kept).
    The cache was reused by split name alone, so another profile's data went unnoticed."""
    settings: dict[str, Any] = {f: getattr(profile, f) for f in DATA_FIELDS}
    settings["source"] = {**SOURCE, **profile.source_overrides}
    settings["targets"] = {t: TARGETS[t] for t in targets}
    cached = read_settings(data_dir)
    if cached is None and (data_dir / "data.json").is_file():
        check_cached(data_dir, settings, None)  # simulated before settings were recorded: a note
        return
    if cached is not None:
        shared = {k: v for k, v in settings.items() if k != "targets"}
        shared["targets"] = {t: spec for t, spec in settings["targets"].items() if t in cached["targets"]}
        mine = {k: v for k, v in cached.items() if k != "targets"}
        mine["targets"] = {t: spec for t, spec in cached["targets"].items() if t in settings["targets"]}
        check_cached(data_dir, shared, mine)
        settings["targets"] = {**cached["targets"], **settings["targets"]}
    write_settings(data_dir, settings)


def run_settings(
    profile: Profile, method: str, data: domain_data.BenchData, target: str, seed: int, run_dir: Path
) -> dict[str, Any]:
    """What one trained run depends on besides its data (:func:`check_data_cache`): the whole
    training config :func:`domain_data.train_method` trains with, keyed as accuracy.py keys its runs
    (``accuracy.run_settings``: every TrainConfig field but where files lie and the thread count,
    the method's merged hyper-parameters and origin). Only the budget and the method were keyed, so
    a changed TrainConfig default (test_views, lr_schedule, selection_criterion, amp) reused old runs."""
    return config_settings(domain_data.train_config(profile, method, data, target, seed, run_dir))


def check_run(item: Path, settings: dict[str, Any], cached: dict[str, Any] | None) -> None:
    """:func:`check_cached` for a trained run; one keyed before its whole config was (its settings
    hold no ``seed``: the budget and the method alone) is checked on the keys it recorded and reused
    with a one-line note, as an item from before settings were recorded is: the rest cannot be
    checked (the run's config.json holds the config as resolved, not as given), and remaking a
    finished benchmark's runs would cost hours."""
    if cached is None or "seed" in cached:
        check_cached(item, settings, cached)
        return
    check_cached(item, {key: settings.get(key) for key in cached}, cached)
    print(
        f"note: {item} was keyed by its budget and method alone: reused with its other training "
        "settings unchecked (delete it to remake it)",
        file=sys.stderr,
        flush=True,
    )


def run_benchmark(
    profile: Profile,
    work: Path,
    methods: list[str],
    targets: list[str],
    user_targets: list[Path],
    seeds: list[int],
    plots: bool = True,
    tomograms: list[Path] | None = None,
    shard: tuple[int, int] = (0, 1),
    threads: int | None = None,
    out: Path = RESULTS,
) -> dict[str, Any] | None:
    """Train and score every (target, method, seed); with ``shard=(i, n)`` only every n-th job.

    A shard only fills the run cache and returns None; a plain run (all cached or not) reports.
    Shards let 2 single-threaded processes share 2 busy cores better than one 2-thread process.
    """
    import dataclasses

    import torch

    from cryoshift.training.checkpoint import RUN_MODEL

    if threads:
        profile = dataclasses.replace(profile, threads=threads)
    torch.set_num_threads(profile.threads)
    t_start = time.perf_counter()
    if shard[0] > 0:  # shard 0 simulates the data; the others wait for it rather than race
        while not (work / "data" / "data.json").is_file():
            time.sleep(5)
    check_data_cache(profile, work / "data", targets)
    data = domain_data.build_data(profile, work / "data", targets, user_targets, tomograms)
    runs: list[dict[str, Any]] = []
    cache = work / "runs"
    cache.mkdir(parents=True, exist_ok=True)
    jobs = [(t, m, s) for s in seeds for t in data.targets for m in methods]
    for i, (target, method, seed) in enumerate(jobs, 1):
        if (i - 1) % shard[1] != shard[0]:
            continue
        key = f"{target}__{method}__s{seed}"
        done = cache / f"{key}.json"
        hparams = profile.method_hparams.get(method, {})
        run_dir = work / "train" / key
        settings = run_settings(profile, method, data, target, seed, run_dir)
        if done.is_file():
            cached = json.loads(done.read_text())
            if "settings" not in cached:  # a record of an older harness: what it recorded must match
                then = {
                    "hparams": cached.get("hparams", hparams),
                    "epochs": cached.get("epochs", profile.epochs),
                }
                diff = settings_differ(then, {"hparams": hparams, "epochs": profile.epochs})
                if diff:
                    raise SystemExit(
                        f"{done} was made with other settings ({diff}): give this run its own --work"
                    )
            check_run(done, settings, cached.get("settings"))
            runs.append(label_chosen(cached))
            continue
        if (run_dir / RUN_MODEL).is_file():  # trained, not scored (killed in between)
            check_run(run_dir, settings, read_settings(run_dir))
        else:
            write_settings(run_dir, settings)
        t0 = time.perf_counter()
        domain_data.train_method(profile, method, data, target, seed, run_dir)
        train_s = time.perf_counter() - t0
        record = {
            "target": target,
            "method": method,
            "seed": seed,
            "train_seconds": round(train_s, 1),
            "hparams": hparams,
            "epochs": profile.epochs,
            "settings": settings,
        }
        record.update(score_run(run_dir, data.targets[target].test, data.source_val, data.num_classes))
        record["run_dir"] = str(run_dir)
        done.write_text(json.dumps(record, indent=1))
        runs.append(record)
        elapsed = time.perf_counter() - t_start
        print(
            f"[{i}/{len(jobs)}] {key}: acc {record['accuracy']:.3f} f1 {record['macro_f1']:.3f} "
            f"(label-chosen {record.get('accuracy_label_chosen', float('nan')):.3f}) "
            f"train {train_s:.0f}s, total {elapsed / 60:.1f} min",
            flush=True,
        )
    if shard[1] > 1:
        return None
    summary = dm.summarise(runs)
    result = {
        "benchmark": "domain_shift",
        "profile": profile.__dict__,
        "class_names": data.class_names,
        "structures": data.structures,
        "source": data.source_spec,
        "targets": {name: t.spec for name, t in data.targets.items()},
        "methods": methods,
        "seeds": seeds,
        "summary": summary,
        "runs": runs,
        "machine": _machine(),
        "wall_minutes": round((time.perf_counter() - t_start) / 60, 1),
        "train_minutes_total": round(sum(r.get("train_seconds", 0.0) for r in runs) / 60, 1),
        "protocol": (
            "Same backbone, data, epochs, batch size and learning rate for every method; only the training "
            "seed changes between seeds (data are fixed). Target labels are never read in training or "
            "model selection (oracle excepted); scores are on a held-out labelled target split. 'gap closed' "
            "= (method - source-only)/(oracle - source-only), per seed, then mean ± s.d. 'label-chosen' is "
            "the best saved checkpoint by target labels (reported only, never used)."
        ),
    }
    if plots:
        result["figures"] = make_figures(profile, data, runs, methods, out)
    return result


def make_figures(
    profile: Profile,
    data: domain_data.BenchData,
    runs: list[dict[str, Any]],
    methods: list[str],
    results: Path = RESULTS,
) -> list[str]:
    """Confusion matrices and PCA embeddings for the first seed, a few methods only, in the
    folder ``domain_shift_<profile>`` of ``results``."""
    from cryoshift.training.checkpoint import RUN_MODEL

    out = results / f"domain_shift_{profile.name}"
    figures: list[str] = []
    seed = min(r["seed"] for r in runs)
    show = [m for m in ("source-only", "cryoshift", "oracle") if m in methods]
    for target, tdata in data.targets.items():
        for method in show:
            run = next(
                (r for r in runs if r["target"] == target and r["method"] == method and r["seed"] == seed),
                None,
            )
            if run is None:
                continue
            path = domain_plots.plot_confusion(
                np.asarray(run["confusion"]),
                data.class_names,
                f"{method} on {target} (seed {seed}): acc {run['accuracy']:.2f}",
                out / f"confusion_{target}_{method}.png",
            )
            figures.append(str(path.relative_to(results.parent)))
            if method == "oracle":
                continue
            model = Path(run["run_dir"]) / RUN_MODEL
            src = domain_data.predict(model, data.source_val.volumes)
            tgt = domain_data.predict(model, tdata.test.volumes)
            path = domain_plots.plot_embedding(
                src.features,
                data.source_val.labels,
                tgt.features,
                tdata.test.labels,
                data.class_names,
                f"{method}, target {target}, seed {seed}",
                out / f"embedding_{target}_{method}.png",
            )
            figures.append(str(path.relative_to(results.parent)))
    return figures


def results_path(out: Path, name: str) -> Path:
    """The results file (JSON; the table is its ``.md``) of profile ``name`` in the results folder ``out``."""
    return out / f"domain_shift_{name}.json"


def write_results(result: dict[str, Any], name: str, out: Path = RESULTS) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = results_path(out, name)
    md_path = json_path.with_suffix(".md")
    json_path.write_text(json.dumps(result, indent=1, default=str))
    prof = result["profile"]
    notes = dict(TARGET_NOTES)
    head = [
        f"# Domain-shift benchmark, profile `{name}`",
        "",
        f"{prof.get('notes', '')} Classes: {', '.join(result['class_names'])}. "
        f"Seeds: {result['seeds']}; {prof['epochs']} epochs, batch {prof['batch_size']}, backbone "
        f"`{prof['backbone']}`; {prof['n_source']} source / {prof['n_target']} unlabelled target / "
        f"{prof['n_target_test']} held-out target volumes.",
        "",
        result["protocol"],
        "",
        f"Machine: {result['machine']['cpu']} ({result['machine']['cores']} cores, torch threads "
        f"{result['machine']['torch_threads']}), torch {result['machine']['torch']}, commit "
        f"{result['machine'].get('git_commit', '?')}; training time summed over runs "
        f"{result.get('train_minutes_total', '?')} min; this report's process {result['wall_minutes']} min "
        "(runs cached by earlier shards are not re-timed).",
        "",
        f"Reproduce: `.venv/bin/python benchmarks/domain_shift.py --profile {name}` (or two "
        f"`--shard i/2 --threads 1` workers, then the same command to report).",
        "",
        "",
    ]
    body = dm.markdown_table(result["summary"], notes)
    figs = "\n".join(f"- `{f}`" for f in result.get("figures", []))
    md_path.write_text("\n".join(head) + body + ("\nFigures:\n" + figs + "\n" if figs else ""))
    return json_path, md_path


def unknown_methods(methods: list[str]) -> str | None:
    """Why ``--methods`` refuses some of ``methods``, naming every registered method; None when it
    takes them all. Any registered name is taken, a plugin's included (the choices were the
    built-in list alone, so a method of one's own could not be benchmarked)."""
    from cryoshift.training.adapt import METHODS as REGISTERED

    unknown = [m for m in methods if m not in REGISTERED]
    if not unknown:
        return None
    return f"unknown method(s) {', '.join(unknown)}; known: {', '.join(REGISTERED.names())}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES), help="budget and data sizes")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=METHODS,
        help=f"methods to train (default: {' '.join(METHODS)}; any registered method, plugins included)",
    )
    parser.add_argument(
        "--targets", nargs="*", default=list(TARGETS), choices=list(TARGETS), help="simulated target domains"
    )
    parser.add_argument(
        "--target-dataset",
        nargs="*",
        type=Path,
        default=[],
        help="labelled experimental dataset directories (or picks with a class column) "
        "to use as extra targets",
    )
    parser.add_argument(
        "--tomograms",
        nargs="*",
        type=Path,
        default=[],
        help="tomograms that a --target-dataset picks table names (matched by file stem)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="training seeds (profile default)")
    parser.add_argument(
        "--work", type=Path, default=None, help="work directory (default /tmp/cryoshift_ds_<profile>)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    parser.add_argument(
        "--shard",
        default="0/1",
        help="i/n: run every n-th job only (fills the cache; then run without it to report)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (profile default)")
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="results folder for domain_shift_<profile>.json/.md and its figures (default: "
        "benchmarks/results, the published tables)",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="let this run replace a results file holding (target, method, seed) cells it lacks "
        "(refused otherwise: a subset run overwrote the published table)",
    )
    args = parser.parse_args(argv)
    refusal = unknown_methods(list(args.methods))
    if refusal:
        parser.error(refusal)
    profile = PROFILES[args.profile]
    seeds = args.seeds if args.seeds is not None else profile.seeds
    work = args.work or Path(f"/tmp/cryoshift_ds_{profile.name}")
    shard = tuple(int(v) for v in args.shard.split("/"))
    if shard[1] == 1 and not args.replace:  # refused before any training, not after
        names = [*args.targets, *(f"user_{p.stem or p.name}" for p in args.target_dataset)]
        planned = {(t, m, s) for t in names for m in args.methods for s in seeds}
        refusal = replace_refusal(results_path(args.out, profile.name), planned, "", "runs", "seed")
        if refusal:
            parser.error(refusal)
    result = run_benchmark(
        profile,
        work,
        list(args.methods),
        list(args.targets),
        list(args.target_dataset),
        seeds,
        plots=not args.no_plots,
        tomograms=list(args.tomograms),
        shard=shard,
        threads=args.threads,
        out=args.out,
    )
    if result is None:
        print(f"shard {args.shard} done; run again without --shard to write the report")
        return 0
    json_path, md_path = write_results(result, profile.name, args.out)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
