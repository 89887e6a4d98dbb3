"""classify() end to end on every input kind, checked against ONNX Runtime run directly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cryoshift.runtime import classify
from cryoshift.runtime.results import read_results


def _run(model_path: Path, inputs: dict, out: Path, **kw) -> object:
    return classify(
        model_path,
        [
            str(inputs["files"]),
            str(inputs["stack"]),
            str(inputs["listing"]),
            str(inputs["picks"]),
            str(inputs["dataset"]),
        ],
        out,
        tomograms=[str(inputs["tomos"])],
        backend="cpu",
        batch_size=8,
        workers=2,
        progress=False,
        **kw,
    )


def test_mixed_inputs_match_direct_onnxruntime(model_path, inputs, helpers, tmp_path):
    summary = _run(model_path, inputs, tmp_path / "out")
    expected: dict = inputs["expected"]
    df = read_results(tmp_path / "out" / "predictions.csv")
    # Every good input exactly once (the listing repeats stack slices and files: classified once).
    assert sorted(df["id"]) == sorted(expected)
    assert summary.classified == len(expected) and summary.total_rows == len(expected)
    errors = pd.read_csv(tmp_path / "out" / "errors.csv", keep_default_na=False)
    assert set(errors["id"]) == inputs["bad"]
    reasons = dict(zip(errors["id"], errors["reason"], strict=True))
    assert "outside the tomogram" in reasons["TS_02:55.0,5.0,5.0"]
    assert "NaN" in reasons[str(inputs["files"] / "has_nan.mrc")]
    assert "16^3" in reasons[str(inputs["files"] / "wrong_box.mrc")]
    # Probabilities and shift scores equal those of ONNX Runtime on the same voxels.
    ids = list(df["id"])
    probs, shift = helpers.expected_scores(model_path, np.stack([expected[i] for i in ids]))
    got = df[[f"prob_{c}" for c in helpers.CLASSES]].to_numpy()
    np.testing.assert_allclose(got, probs, atol=1e-5)
    np.testing.assert_allclose(df["shift_score"].to_numpy(), shift, rtol=1e-4)
    np.testing.assert_allclose(df["confidence"], probs.max(1), atol=1e-5)
    assert list(df["class_name"]) == [helpers.CLASSES[k] for k in probs.argmax(1)]
    assert len(set(df["class_name"])) > 1
    # Ids trace back: tomogram rows carry name and coordinates, stack rows file and index.
    tomo = df[df["tomo_name"] == "TS_01"]
    assert len(tomo) == 3 and set(tomo["x"]) == {20.0, 8.0, 39.0}
    stack_rows = df[df["path"] == str(inputs["stack"])]
    assert sorted(stack_rows["index"]) == list(range(12))


def test_star_has_the_same_rows_as_csv(model_path, inputs, tmp_path):
    _run(model_path, inputs, tmp_path / "out", unknown_threshold=0.6)
    from_csv = read_results(tmp_path / "out" / "predictions.csv")
    from_star = read_results(tmp_path / "out" / "predictions.star")
    # Same rows and classification; the STAR carries the input tables' own columns instead of
    # path/index/x/y/z (runtime/star_out.py), so compare on the id.
    from_star = from_star.set_index("id").loc[from_csv["id"]].reset_index()
    cols = ["id", "class_index", "class_name", "best_class", "confidence", "shift_score"]
    pd.testing.assert_frame_equal(from_csv[cols], from_star[cols], check_dtype=False)
    assert (from_star["class_name"] == "unknown").any() and -1 in set(from_star["class_index"])
    import starfile

    raw = starfile.read(tmp_path / "out" / "predictions.star")
    assert raw["rlnClassNumber"].min() == 0  # RELION counts classes from 1; 0 = unknown


def test_manifest_records_model_inputs_counts_versions(model_path, inputs, tmp_path):
    summary = _run(model_path, inputs, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    from cryoshift.runtime.backends import file_sha256

    assert manifest["model"]["sha256"] == file_sha256(model_path)
    assert manifest["summary"]["total_rows"] == summary.total_rows
    assert manifest["summary"]["total_errors"] == 4
    assert sum(manifest["summary"]["class_counts"].values()) == summary.total_rows
    assert {"cryoshift", "numpy", "onnxruntime", "python"} <= set(manifest["versions"])
    assert manifest["inputs"][0] == str(inputs["files"])


def test_unknown_threshold_marks_low_confidence(model_path, inputs, tmp_path):
    base = _run(model_path, inputs, tmp_path / "a")
    df = read_results(tmp_path / "a" / "predictions.csv")
    cut = float(np.median(df["confidence"]))
    _run(model_path, inputs, tmp_path / "b", unknown_threshold=cut)
    low = read_results(tmp_path / "b" / "predictions.csv")
    flagged = low["class_name"] == "unknown"
    assert flagged.sum() == (low["confidence"] < cut).sum() > 0
    assert (low.loc[flagged, "class_index"] == -1).all()
    assert (low.loc[flagged, "best_class"] != "unknown").all()
    assert base.total_rows == len(low)


def test_shards_partition_the_items(model_path, inputs, tmp_path):
    seen = []
    for i in range(3):
        s = classify(
            model_path,
            [str(inputs["stack"]), str(inputs["files"])],
            tmp_path,
            backend="cpu",
            shard=f"{i}/3",
            progress=False,
            batch_size=4,
        )
        assert Path(s.predictions_csv).name == f"predictions.shard-{i}-of-3.csv"
        seen.extend(read_results(s.predictions_csv)["id"])
    assert len(seen) == len(set(seen)) == 12 + 8


def test_devices_run_one_process_each_and_merge(model_path, inputs, tmp_path):
    args = [str(inputs["stack"]), str(inputs["picks"])]
    kw = dict(tomograms=[str(inputs["tomos"])], backend="cpu", progress=False, batch_size=4)
    single = classify(model_path, args, tmp_path / "one", **kw)
    multi = classify(model_path, args, tmp_path / "two", devices=[0, 1], **kw)
    a = read_results(single.predictions_csv).sort_values("id").reset_index(drop=True)
    b = read_results(multi.predictions_csv).sort_values("id").reset_index(drop=True)
    assert list(a["id"]) == list(b["id"]) and multi.total_rows == single.total_rows
    np.testing.assert_allclose(a["confidence"], b["confidence"])
    assert multi.total_errors == single.total_errors == 1
    assert (tmp_path / "two" / "parts" / "device-1" / "predictions.csv").is_file()
    assert (tmp_path / "two" / "predictions.star").is_file()


def test_devices_write_each_id_once_and_resume_from_the_run_ledgers(model_path, inputs, tmp_path):
    # The same stack given three times: the device workers share the deduplicated items, so no id
    # reaches two workers; a resumed run finds everything done and leaves the files as they were.
    args = [str(inputs["stack"])] * 3
    kw = dict(backend="cpu", progress=False, batch_size=4)
    first = classify(model_path, args, tmp_path / "out", devices=[0, 1], **kw)
    ids = list(read_results(first.predictions_csv)["id"])
    assert len(ids) == len(set(ids)) == 12 and first.classified == 12
    assert "2 worker processes" in first.backend
    again = classify(model_path, args, tmp_path / "out", devices=[0, 1], resume=True, **kw)
    assert again.classified == 0 and again.resumed == 12 and again.total_rows == 12
    assert list(read_results(again.predictions_csv)["id"]) == ids
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["settings"]["devices"] == [0, 1] and manifest["model"]["backend"] == "cpu"


@pytest.mark.slow
def test_ray_actor_pool_matches_local_run(model_path, inputs, tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    import ray

    from cryoshift.runtime.distributed import classify_ray

    args = [str(inputs["stack"]), str(inputs["files"])]
    local = classify(model_path, args, tmp_path / "local", backend="cpu", progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        summary = classify_ray(
            model_path,
            args,
            tmp_path / "ray",
            backend="cpu",
            batch_size=8,
            num_workers=2,
            threads=1,
            progress=False,
        )
    finally:
        ray.shutdown()
    a = read_results(local.predictions_csv)
    b = read_results(summary.predictions_csv)
    assert list(a["id"]) == list(b["id"])  # the same rows in the same (input) order
    assert list(a["class_name"]) == list(b["class_name"])
    np.testing.assert_allclose(a["confidence"], b["confidence"], atol=1e-6)
    assert summary.total_errors == local.total_errors == 3


def _by_id(out: Path, csv: str = "predictions.csv") -> tuple[pd.DataFrame, np.ndarray]:
    """A run's rows sorted by id, and its features.npy rows in the same order."""
    rows = read_results(out / csv)
    feats = np.load(out / "features.npy", allow_pickle=False)
    assert feats.dtype == np.float32 and feats.shape[0] == len(rows)  # row i of the CSV is row i here
    order = np.argsort(rows["id"].to_numpy(), kind="stable")
    return rows.iloc[order].reset_index(drop=True), feats[order]


def _same_run(local: Path, other: Path) -> None:
    """``other`` holds the rows, features, errors and per-class STARs of ``local`` (any row order)."""
    import starfile

    a, fa = _by_id(local)
    b, fb = _by_id(other)
    pd.testing.assert_frame_equal(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fb, fa, rtol=1e-5, atol=1e-6)
    ea, eb = (read_results(d / "errors.csv").sort_values("id").reset_index(drop=True) for d in (local, other))
    pd.testing.assert_frame_equal(ea, eb)
    split = sorted(p.name for p in local.glob("predictions_*.star"))
    assert len(split) > 1 and split == sorted(p.name for p in other.glob("predictions_*.star"))
    for name in split:
        sa, sb = (
            starfile.read(d / name, always_dict=True)["particles"].sort_values("csId").reset_index(drop=True)
            for d in (local, other)
        )
        pd.testing.assert_frame_equal(sa, sb, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_ray_binning_split_by_class_and_features_match_a_local_run(model_path, inputs, helpers, tmp_path):
    """--binning / --coordinate-pixel-size / --split-by-class / --features with --ray: the same rows,
    features (row i of features.npy with row i of the CSV), errors and per-class STARs as a local
    run; a resumed Ray run goes on writing the features of the interrupted one, as a local one does."""
    pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    import shutil

    import ray
    import starfile

    from cryoshift.runtime.cli import main
    from cryoshift.runtime.distributed import classify_ray

    # Picks made on pixels twice as fine as the tomograms: --binning 2 (or VOXEL/2 A per pick pixel).
    picks = starfile.read(inputs["picks"])
    for axis in "XYZ":
        picks[f"rlnCoordinate{axis}"] *= 2
    fine = tmp_path / "fine.star"
    starfile.write({"particles": picks}, fine)
    tomos = str(inputs["tomos"])
    args = [str(model_path), str(inputs["stack"]), str(inputs["files"]), str(fine), "-t", tomos]
    opts = ["-b", "cpu", "-q", "--batch-size", "8", "--binning", "2", "--split-by-class", "--features"]
    assert main(["classify", *args, "-o", str(tmp_path / "local"), *opts]) == 0
    local_rows = read_results(tmp_path / "local" / "predictions.csv")
    assert "TS_01:20.0,24.0,12.0" in set(local_rows["id"])  # the picks, scaled to the tomogram's voxels
    # An interrupted local run: 6 rows in its CSV, all its features (the resume cuts them back), no errors.
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "local", killed)
    lines = (killed / "predictions.csv").read_text().splitlines(keepends=True)
    (killed / "predictions.csv").write_text("".join(lines[:7]))
    (killed / "errors.csv").write_text((killed / "errors.csv").read_text().splitlines(keepends=True)[0])
    for stale in [killed / "manifest.json", *killed.glob("predictions*.star")]:
        stale.unlink()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray_opts = ["--ray", "--ray-workers", "2", "--threads", "1"]
        assert main(["classify", *args, "-o", str(tmp_path / "ray"), *opts, *ray_opts]) == 0
        resumed = classify_ray(
            model_path,
            args[1:4],
            killed,
            tomograms=[tomos],
            backend="cpu",
            batch_size=8,
            num_workers=2,
            threads=1,
            progress=False,
            resume=True,
            coordinate_pixel_size=helpers.VOXEL / 2,
            split_by_class=True,
        )
    finally:
        ray.shutdown()
    _same_run(tmp_path / "local", tmp_path / "ray")
    assert resumed.resumed == 6 and resumed.classified == len(local_rows) - 6
    _same_run(tmp_path / "local", killed)
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["settings"]["binning"] == 2 and manifest["settings"]["engine"] == "ray"
    assert manifest["features"]["rows"] == len(local_rows)


def test_reader_processes_give_the_same_rows_as_threads(model_path, inputs, tmp_path):
    args = [str(inputs["files"]), str(inputs["stack"]), str(inputs["picks"])]
    kw = dict(tomograms=[str(inputs["tomos"])], backend="cpu", progress=False, batch_size=4, workers=2)
    threads = classify(model_path, args, tmp_path / "t", **kw)
    procs = classify(model_path, args, tmp_path / "p", reader_processes=True, **kw)
    a, b = read_results(threads.predictions_csv), read_results(procs.predictions_csv)
    assert list(a["id"]) == list(b["id"])  # same order too: the writer restores input order
    np.testing.assert_allclose(a["confidence"], b["confidence"])
    assert read_results(procs.errors_csv).equals(read_results(threads.errors_csv))


def test_csv_listing_of_files_and_stack_slices(model_path, inputs, tmp_path):
    listing = tmp_path / "list.csv"
    pd.DataFrame({"rlnImageName": [f"000003@{inputs['stack']}", str(inputs["files"] / "sub_02.mrc")]}).to_csv(
        listing, index=False
    )
    s = classify(model_path, [str(listing)], tmp_path / "out", backend="cpu", progress=False)
    df = read_results(s.predictions_csv)
    assert list(df["id"]) == [f"000003@{inputs['stack']}", str(inputs["files"] / "sub_02.mrc")]
    assert list(df["index"]) == [2, -1]


def test_relion5_centred_angstrom_picks_use_the_tomogram_header(model_path, inputs, tmp_path):
    import starfile

    # TS_01 is 40 x 48 x 24 voxels of 10 A: pixel (20, 24, 12) is the centre, (8, 8, 8) is off it.
    picks = pd.DataFrame(
        {
            "rlnTomoName": ["TS_01", "TS_01"],
            "rlnCenteredCoordinateXAngst": [0.0, -120.0],
            "rlnCenteredCoordinateYAngst": [0.0, -160.0],
            "rlnCenteredCoordinateZAngst": [0.0, -40.0],
        }
    )
    starfile.write({"particles": picks}, tmp_path / "centred.star")
    tomos = [str(inputs["tomos"])]
    s = classify(
        model_path,
        [str(tmp_path / "centred.star")],
        tmp_path / "out",
        tomograms=tomos,
        backend="cpu",
        progress=False,
    )
    df = read_results(s.predictions_csv)
    assert list(df["id"]) == ["TS_01:20.0,24.0,12.0", "TS_01:8.0,8.0,8.0"]
    plain = read_results(
        classify(
            model_path,
            [str(inputs["picks"])],
            tmp_path / "plain",
            tomograms=tomos,
            backend="cpu",
            progress=False,
        ).predictions_csv
    )
    same = plain.set_index("id").loc[list(df["id"]), "confidence"].to_numpy()
    np.testing.assert_allclose(df["confidence"], same)


def _files_some_without_voxel_size(folder: Path, helpers, unset: set[int]) -> list[Path]:
    """Four single volumes; those in ``unset`` have header cell 0 (no voxel size)."""
    import struct

    from cryoshift.runtime.mrc import write_volume

    folder.mkdir()
    paths = []
    for i, v in enumerate(helpers.make_volumes(4)):
        path = write_volume(folder / f"sub_{i}.mrc", v, voxel_size=helpers.VOXEL)
        if i in unset:
            raw = bytearray(path.read_bytes())
            struct.pack_into("<3f", raw, 40, 0.0, 0.0, 0.0)
            path.write_bytes(bytes(raw))
        paths.append(path)
    return paths


@pytest.mark.parametrize("named", ["files", "folder", "glob", "listing"])
def test_a_file_without_voxel_size_is_noted_however_it_was_named(model_path, helpers, tmp_path, named):
    """Files past the first of a folder or glob were classified without the note and manifest
    record that the same file named on the command line (or in a STAR listing) gets."""
    import starfile

    folder = tmp_path / "subs"
    paths = _files_some_without_voxel_size(folder, helpers, unset={1, 3})
    if named == "listing":
        starfile.write(
            {"particles": pd.DataFrame({"rlnImageName": [str(p) for p in paths]})}, tmp_path / "l.star"
        )
    args = {
        "files": [str(p) for p in paths],
        "folder": [str(folder)],
        "glob": [str(folder / "sub_*.mrc")],
        "listing": [str(tmp_path / "l.star")],
    }[named]
    s = classify(model_path, args, tmp_path / "out", backend="cpu", progress=False)
    assert (s.total_rows, s.total_errors) == (4, 0)
    noted = [n for n in s.notes if "no usable voxel size in the header" in n]
    assert [n.split(":")[0] for n in noted] == [str(paths[1]), str(paths[3])]
    manifest = json.loads(Path(s.manifest).read_text())
    assert manifest["data"]["voxel_sizes"] == {
        str(paths[0]): pytest.approx(helpers.VOXEL),
        str(paths[1]): None,
        str(paths[2]): pytest.approx(helpers.VOXEL),
        str(paths[3]): None,
    }


def test_a_folder_file_of_another_voxel_size_fails_as_an_explicit_one_does(model_path, helpers, tmp_path):
    from cryoshift.runtime.mrc import write_volume

    folder = tmp_path / "subs"
    folder.mkdir()
    vols = helpers.make_volumes(2)
    write_volume(folder / "a.mrc", vols[0], voxel_size=helpers.VOXEL)
    odd = write_volume(folder / "b.mrc", vols[1], voxel_size=helpers.VOXEL / 2)
    reasons = []
    for args in ([str(folder)], [str(folder / "a.mrc"), str(odd)]):
        s = classify(model_path, args, tmp_path / f"out{len(reasons)}", backend="cpu", progress=False)
        assert (s.total_rows, s.total_errors) == (1, 1)
        reasons.append(read_results(s.errors_csv).set_index("id").loc[str(odd), "reason"])
    assert reasons[0] == reasons[1] and "voxel size 5 A differs from the model's 10 A" in reasons[0]


def test_many_files_without_voxel_size_get_a_count_not_a_note_each(helpers, tmp_path):
    """A folder of thousands of such files would bury the summary: the first few are named, the
    rest counted in one note; the manifest still records each as null."""
    import struct

    from cryoshift.runtime.mrc import write_volume
    from cryoshift.runtime.sources import plan_inputs
    from cryoshift.runtime.sources.planner import UNKNOWN_VOXEL_NOTES

    folder = tmp_path / "subs"
    folder.mkdir()
    n = UNKNOWN_VOXEL_NOTES + 3
    vol = helpers.make_volumes(1)[0]
    for i in range(n):
        path = write_volume(folder / f"sub_{i:03d}.mrc", vol, voxel_size=helpers.VOXEL)
        raw = bytearray(path.read_bytes())
        struct.pack_into("<3f", raw, 40, 0.0, 0.0, 0.0)
        path.write_bytes(bytes(raw))
    plan = plan_inputs([str(folder)], helpers.BOX, helpers.VOXEL)
    assert len(plan.unknown_voxel) == n and len(plan.items) == n
    assert len(plan.notes) == UNKNOWN_VOXEL_NOTES + 1
    assert plan.notes[-1].startswith("3 more files have no usable voxel size in the header")
