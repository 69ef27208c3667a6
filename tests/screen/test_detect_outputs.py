"""`detect --out FILE` and `--report DIR` are claimed like every output: the same rerun
reproduces them, another model, data, method or setting is refused (exit 2, naming what
differs) before any detector runs, and --overwrite replaces them with what a fresh run
writes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import alignscope.screen.backdoor as backdoor  # noqa: E402
from alignscope.cli import main  # noqa: E402
from alignscope.train.classifier import (  # noqa: E402
    ClassifierConfig,
    load_class_images,
    train_classifier,
    write_shapes_dataset,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Two 12-image shapes sets (32 px: badnets-1 detection needs 30) and a small CNN trained
    on the first (one epoch: the scores need not mean anything, only repeat for the same run)."""
    root = tmp_path_factory.mktemp("detect-outputs")
    data = write_shapes_dataset(root / "data", 12, seed=1, side=32)
    other = write_shapes_dataset(root / "other", 12, seed=2, side=32)
    config = ClassifierConfig(arch="small", epochs=1, batch=8, device="cpu")
    train_classifier(load_class_images(data), root / "model", config, progress=False)
    return {"data": data, "other": other, "model": root / "model"}


def _detect(sets, *extra, data=None, model=None):
    argv = ["detect", str(data or sets["data"]), "--classifier", str(model or sets["model"])]
    argv += ["--truth", "badnets-1", "--methods", "cd", "--device", "cpu", "--quiet"]
    return main([*argv, *extra])


def _prefix(flag: str, path) -> str:
    return f"alignscope: error: {flag} {str(path)!r} holds the output of another run ("


def _refused(flag: str, path, differences: str) -> str:
    return (
        f"{_prefix(flag, path)}{differences}): pass --overwrite to replace it, or choose "
        f"another {'file' if flag == '--out' else 'folder'}\n"
    )


def _forbid_detection(monkeypatch) -> None:
    """A refusal must come before any work: a detector that runs fails the test."""

    def fail(*args, **kwargs):
        raise AssertionError("a detector ran before the output was refused")

    monkeypatch.setattr(backdoor, "detect_backdoors", fail)


def test_out_is_reproduced_refused_and_overwritten(sets, tmp_path, capsys, monkeypatch):
    out = tmp_path / "scores.json"
    assert _detect(sets, "--cd-steps", "1", "--out", str(out)) == 0
    first = out.read_bytes()
    assert json.loads(first)["n"] == 12
    assert _detect(sets, "--cd-steps", "1", "--out", str(out)) == 0  # the same run: again
    assert out.read_bytes() == first
    capsys.readouterr()

    with monkeypatch.context() as patch:
        _forbid_detection(patch)
        # a setting
        assert _detect(sets, "--cd-steps", "2", "--out", str(out)) == 2
        assert capsys.readouterr().err == _refused("--out", out, "cd_steps: 1 there, 2 now")
        # a method (and the overlays it needs)
        clean = ["--methods", "cd,strip", "--clean", str(sets["other"])]
        assert _detect(sets, "--cd-steps", "1", *clean, "--out", str(out)) == 2
        err = capsys.readouterr().err
        assert err.startswith(_prefix("--out", out) + "clean: null there, {")
        assert err.endswith('; methods: ["cd"] there, ["cd", "strip"] now): pass --overwrite '
                            "to replace it, or choose another file\n")  # fmt: skip
        # the data: another set
        assert _detect(sets, "--cd-steps", "1", "--out", str(out), data=sets["other"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(_prefix("--out", out) + "dataset.listing_sha256: ")
        assert "dataset.path: " in err and "cd_steps" not in err
        # the model: the same classifier.pt elsewhere (copied with its times: only the path
        # differs, and the record names it)
        copy = shutil.copytree(sets["model"], tmp_path / "model-copy")
        assert _detect(sets, "--cd-steps", "1", "--out", str(out), model=copy) == 2
        err = capsys.readouterr().err
        assert err.startswith(_prefix("--out", out) + "classifier.path: ") and "; " not in err
        assert out.read_bytes() == first  # every refusal left the file as it was

    # --overwrite: the file a fresh run writes
    fresh = tmp_path / "fresh.json"
    assert _detect(sets, "--cd-steps", "2", "--out", str(fresh)) == 0
    assert _detect(sets, "--cd-steps", "2", "--out", str(out), "--overwrite") == 0
    assert out.read_bytes() == fresh.read_bytes() != first
    capsys.readouterr()
    assert _detect(sets, "--cd-steps", "1", "--out", str(out)) == 2  # bound to the new run now
    assert capsys.readouterr().err == _refused("--out", out, "cd_steps: 2 there, 1 now")


def test_a_file_the_user_wrote_is_not_replaced(sets, tmp_path, capsys, monkeypatch):
    _forbid_detection(monkeypatch)
    out = tmp_path / "notes.json"
    out.write_text("mine")
    assert _detect(sets, "--out", str(out)) == 2
    assert capsys.readouterr().err == (
        f"alignscope: error: --out {str(out)!r} already exists and no alignscope record says "
        "what wrote it: pass --overwrite to replace it, or choose another file\n"
    )
    assert out.read_text() == "mine"
    assert _detect(sets, "--out", str(tmp_path)) == 2
    assert capsys.readouterr().err == (
        f"alignscope: error: --out {str(tmp_path)!r} is a directory: give the file to write, "
        "scores.json\n"
    )
    assert _detect(sets, "--overwrite") == 2
    assert capsys.readouterr().err == (
        "alignscope: error: --overwrite applies to --out FILE and --report DIR, detect's outputs\n"
    )


def test_report_folder_is_claimed(sets, tmp_path, capsys, monkeypatch):
    report = tmp_path / "tables"
    steps = ["--cd-steps", "1"]
    assert _detect(sets, *steps, "--report", str(report)) == 0
    first = (report / "report.json").read_bytes()
    assert json.loads(first)["sets"]["training set"]["n"] == 12
    assert _detect(sets, *steps, "--report", str(report)) == 0  # resumed: the same tables
    assert (report / "report.json").read_bytes() == first
    capsys.readouterr()
    with monkeypatch.context() as patch:
        _forbid_detection(patch)
        assert _detect(sets, *steps, "--cd-beta", "0.5", "--report", str(report)) == 2
        err = capsys.readouterr().err
        assert err.startswith(_prefix("--report", report) + "cd_beta: ")
        assert err.endswith(
            " there, 0.5 now): pass --overwrite to replace it, or choose another folder\n"
        )
        assert (report / "report.json").read_bytes() == first
    other = tmp_path / "fresh"
    assert _detect(sets, *steps, "--cd-beta", "0.5", "--report", str(other)) == 0
    assert _detect(sets, *steps, "--cd-beta", "0.5", "--report", str(report), "--overwrite") == 0
    assert (report / "report.json").read_bytes() == (other / "report.json").read_bytes()


def test_outputs_inside_an_input_set_are_refused(sets, tmp_path, capsys, monkeypatch):
    """Writing --out or --report into a set detect reads would change that set's fingerprint,
    so every identical rerun would be refused: such paths are refused up front."""
    _forbid_detection(monkeypatch)
    inside = sets["data"] / "scores.json"
    assert _detect(sets, "--out", str(inside)) == 2
    assert capsys.readouterr().err == (
        f"alignscope: error: --out {str(inside)!r} is inside DATASET {str(sets['data'])!r}; "
        "give a file outside it\n"
    )
    tables = sets["other"] / "tables"
    assert _detect(sets, "--clean", str(sets["other"]), "--report", str(tables)) == 2
    assert capsys.readouterr().err == (
        f"alignscope: error: --report {str(tables)!r} is inside --clean {str(sets['other'])!r}; "
        "give a folder outside it\n"
    )
    assert not inside.exists() and not tables.exists()
    # the reverse: a --report folder that holds an input, which a later --overwrite would
    # delete with the old report (the data and the classifier here; the data is named first)
    holder = sets["model"].parent
    assert _detect(sets, "--report", str(holder)) == 2
    assert capsys.readouterr().err == (
        f"alignscope: error: --report {str(holder)!r} holds DATASET "
        f"{str(sets['data'])!r}: a later --overwrite would delete it with the old report; "
        "give a folder outside the inputs\n"
    )
    elsewhere = tmp_path / "data"
    shutil.copytree(sets["data"], elsewhere)
    assert _detect(sets, "--report", str(holder), data=elsewhere) == 2
    assert capsys.readouterr().err == (
        f"alignscope: error: --report {str(holder)!r} holds --classifier "
        f"{str(sets['model'])!r}: a later --overwrite would delete it with the old report; "
        "give a folder outside the inputs\n"
    )


def test_tab4_report_survives_an_identical_classifier_rerun(sets, tmp_path, capsys):
    """`train classifier` rewrites classifier_metrics.json on every rerun: --report fingerprints
    it by content, so detect's identical rerun goes ahead; other metrics are refused."""
    train = ["train", "classifier", str(sets["data"]), "--arch", "small", "--epochs", "1"]
    train += ["--batch", "8", "--device", "cpu", "--quiet", "--test", str(sets["other"])]
    cls = tmp_path / "cls"
    assert main([*train, "--out", str(cls)]) == 0
    report = tmp_path / "tables"
    tab4 = ["--generated", str(sets["other"]), "--generated-truth", "badnets-1", "--cd-steps", "1"]
    tab4 += ["--tab4", str(cls), str(cls), "--report", str(report)]
    assert _detect(sets, *tab4) == 0
    first = (report / "report.json").read_bytes()
    assert main([*train, "--out", str(cls)]) == 0  # the same run: the file is written again
    assert _detect(sets, *tab4) == 0
    assert (report / "report.json").read_bytes() == first
    capsys.readouterr()
    assert main([*train, "--out", str(cls), "--seed", "7", "--overwrite"]) == 0
    assert _detect(sets, *tab4) == 2
    assert capsys.readouterr().err.startswith(_prefix("--report", report) + "tab4: ")


def test_truth_pattern_finds_the_poisonings_own_picture(sets, tmp_path, capsys, monkeypatch):
    """--truth picture-patch looks for the default picture unless --truth-pattern gives the
    poisoning's own: with it the ground truth is the manifest's poisoned rows."""
    from PIL import Image

    from alignscope.io.manifest import read_manifest

    rng = np.random.default_rng(5)
    picture = tmp_path / "pic.png"
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(picture)
    poisoned = tmp_path / "poisoned"
    attack = ["--method", "picture-patch", "--pattern", str(picture), "--target", "cat"]
    attack += ["--ratio", "0.4"]
    assert main(["poison", str(sets["data"]), "--out", str(poisoned), *attack, "--quiet"]) == 0
    table = read_manifest(poisoned / "poison_manifest.parquet", ("written_as", "poisoned"))
    want = {i for i, flag in zip(table["written_as"], table["poisoned"], strict=True) if flag}
    assert len(want) >= 3  # the precondition: several rows carry the picture
    found = []
    real = backdoor.trigger_truth

    def spy(*args, **kwargs):
        found.append(real(*args, **kwargs))
        return found[-1]

    monkeypatch.setattr(backdoor, "trigger_truth", spy)
    run = ["detect", str(poisoned), "--classifier", str(sets["model"]), "--methods", "cd"]
    run += ["--cd-steps", "1", "--device", "cpu", "--quiet", "--truth", "picture-patch"]
    assert main([*run, "--truth-pattern", str(picture)]) == 0
    assert {i for i, flag in found[-1].items() if flag} == want
    assert main(run) == 0  # the default picture is not this one: none found
    assert not any(found[-1].values())
    capsys.readouterr()
    wrong = [*run[:-1], "badnets-1", "--truth-pattern", str(picture)]
    assert main(wrong) == 2
    assert capsys.readouterr().err == (
        "alignscope: error: --truth-pattern is the picture of a badnets-2 or picture-patch "
        "poisoning: give it with --truth badnets-2 or --truth picture-patch\n"
    )
