"""`train classifier`: TA and ASR of a small CNN on a BadNets-1-poisoned synthetic class set,
the ASR falling when most poisons lose their trigger (BiBadDiff's Tab. 4 mechanism), resume,
labels and the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pq = pytest.importorskip("pyarrow.parquet")

from alignscope._files import LOCK_NAME, RECORD_NAME, OutputConflict  # noqa: E402
from alignscope._reference import badnets1_reference  # noqa: E402
from alignscope.cli import main  # noqa: E402
from alignscope.io.datasets import open_dataset  # noqa: E402
from alignscope.poison.concepts import make_vocabulary  # noqa: E402
from alignscope.poison.run import poison_dataset  # noqa: E402
from alignscope.train.classifier import (  # noqa: E402
    SHAPE_CLASSES,
    ClassifierConfig,
    caption_class,
    evaluate_classifier,
    load_class_images,
    load_classifier,
    record_class,
    to_tensor,
    train_classifier,
    write_shapes_dataset,
)

SMALL = {"arch": "small", "epochs": 10, "lr": 0.05, "batch": 32, "seed": 0}


def _refused(out, differences: str) -> str:
    """claimed_output's refusal, as tests/train/test_resume.py has it for `train`."""
    return (
        f"--out {str(out)!r} holds the output of another run ({differences}): pass "
        "--overwrite to replace it, or choose another folder"
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backdoor(tmp_path_factory):
    """A 320-image shapes set poisoned with BadNets-1 toward "cat" at 10% (32 poisons), the
    same set with the trigger removed from 4 of every 5 poisons (still labelled cat), a
    120-image clean test set, and a small CNN trained on each."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("backdoor")
    clean = write_shapes_dataset(root / "clean", 320, seed=1)
    test = write_shapes_dataset(root / "test", 120, seed=2)
    poisoned = root / "poisoned"
    poison_dataset(
        open_dataset(clean),
        poisoned,
        method="badnets-1",
        target="cat",
        ratio=0.1,
        seed=0,
        vocabulary=make_vocabulary(list(SHAPE_CLASSES)),
    )
    manifest = pq.read_table(poisoned / "poison_manifest.parquet").to_pydict()
    rows = [r for r, p in zip(manifest["row"], manifest["poisoned"], strict=True) if p]
    removed = root / "removed"
    shutil.copytree(poisoned, removed)
    for j, r in enumerate(rows):
        if j % 5:  # the clean image back, the caption still "A photo of a cat"
            shutil.copy(clean / f"{r:04d}.png", removed / f"{r:08d}.png")
    models = {}
    for name, data in (("poisoned", poisoned), ("removed", removed)):
        train_classifier(
            load_class_images(data), root / f"out-{name}", ClassifierConfig(**SMALL), progress=False
        )
        models[name] = load_classifier(root / f"out-{name}", "cpu")
    return {"root": root, "test": test, "models": models, "poisons": len(rows)}


def _hand_asr(model, test_dir, class_names, target):
    """ASR counted here: the reference BadNets-1 on each non-target test image, argmax."""
    ids = sorted(p.name for p in test_dir.glob("*.png"))
    from PIL import Image

    hits = total = 0
    for name in ids:
        cls = (test_dir / name).with_suffix(".txt").read_text().rsplit(" ", 1)[-1]
        if cls == target:
            continue
        image = badnets1_reference(np.asarray(Image.open(test_dir / name).convert("RGB")))
        with torch.no_grad():
            pred = int(model(to_tensor(image[None])).argmax(dim=1))
        hits += class_names[pred] == target
        total += 1
    return hits / total, total


def test_backdoored_classifier_has_high_ta_and_asr(backdoor):
    model, meta = backdoor["models"]["poisoned"]
    assert backdoor["poisons"] == 32 and meta["class_names"] == sorted(SHAPE_CLASSES)
    result = evaluate_classifier(model, meta, backdoor["test"], target="cat", trigger="badnets-1")
    assert result["n_test"] == 120 and result["n_asr"] == 90
    assert result["ta"] >= 0.9
    assert result["asr"] >= 0.9
    # the ASR as counted independently (reference trigger, per-image argmax)
    want, total = _hand_asr(model, backdoor["test"], meta["class_names"], "cat")
    assert total == 90 and result["asr"] == pytest.approx(want)


def test_asr_falls_when_most_poisons_lose_their_trigger(backdoor):
    full = evaluate_classifier(
        *backdoor["models"]["poisoned"], backdoor["test"], target="cat", trigger="badnets-1"
    )
    model, meta = backdoor["models"]["removed"]
    cut = evaluate_classifier(model, meta, backdoor["test"], target="cat", trigger="badnets-1")
    assert cut["ta"] >= 0.9  # mislabelled images without a trigger barely cost accuracy
    assert cut["asr"] <= 0.2 < full["asr"] - 0.6
    want, _ = _hand_asr(model, backdoor["test"], meta["class_names"], "cat")
    assert cut["asr"] == pytest.approx(want)


def test_caption_and_folder_labels(tmp_path):
    assert caption_class("A photo of a garbage truck") == "garbage truck"
    assert caption_class("an photo of an Apple.") == "apple"
    assert caption_class("a dog on a sofa") is None
    from PIL import Image

    img = np.zeros((12, 12, 3), dtype=np.uint8)
    for folder in ("dog", "cat"):
        (tmp_path / "d" / folder).mkdir(parents=True)
        Image.fromarray(img).save(tmp_path / "d" / folder / "0.png")
    data = load_class_images(tmp_path / "d")
    assert data.class_names == ["cat", "dog"] and data.labels.tolist() == [0, 1]
    # a test set takes its classifier's classes: "dog" is label 0 there
    assert load_class_images(tmp_path / "d", class_names=["dog", "cat"]).labels.tolist() == [1, 0]
    (tmp_path / "flat").mkdir()
    Image.fromarray(img).save(tmp_path / "flat" / "x.png")
    (tmp_path / "flat" / "x.txt").write_text("a sunny day")
    with pytest.raises(ValueError) as err:
        load_class_images(tmp_path / "flat")
    assert str(err.value) == (
        f"{tmp_path / 'flat'}: record 'x.png' names no class (caption 'a sunny day'); give "
        "captions 'A photo of a {class}' naming a class, or class folders"
    )


def test_resume_repeats_the_uninterrupted_run(tmp_path, monkeypatch):
    data = load_class_images(write_shapes_dataset(tmp_path / "d", 40, seed=3, side=16))
    # on the CPU: GPU convolutions need not repeat bit for bit
    config = ClassifierConfig(arch="small", epochs=3, lr=0.05, batch=8, seed=5, device="cpu")
    whole = train_classifier(data, tmp_path / "a", config, progress=False)
    real_save, calls = torch.save, []

    def interrupted_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # Ctrl-C while the third epoch's checkpoint is written
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(data, tmp_path / "b", config, progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    left = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert left == sorted([LOCK_NAME, RECORD_NAME, "classifier.pt"])  # no temp left
    assert not json.loads((tmp_path / "b" / RECORD_NAME).read_text())["complete"]
    resumed = train_classifier(data, tmp_path / "b", config, progress=False)
    assert resumed["resumed_from"] == 2 and resumed["losses"] == whole["losses"]
    a = torch.load(tmp_path / "a" / "classifier.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "classifier.pt", weights_only=True)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert json.loads((tmp_path / "b" / RECORD_NAME).read_text())["complete"]
    with pytest.raises(OutputConflict) as err:
        train_classifier(
            data, tmp_path / "b", ClassifierConfig(**{**vars(config), "lr": 0.1}), progress=False
        )
    assert str(err.value) == _refused(tmp_path / "b", "config.lr: 0.05 there, 0.1 now")


def test_cli_train_classifier(tmp_path, capsys):
    data = write_shapes_dataset(tmp_path / "d", 24, seed=4, side=16)
    test = write_shapes_dataset(tmp_path / "t", 12, seed=5, side=16)
    args = ["train", "classifier", str(data), "--arch", "small", "--out", str(tmp_path / "o")]
    asr = ["--test", str(test), "--target", "cat", "--trigger", "badnets-1"]
    run = ["--epochs", "2", "--batch", "8", "--seed", "1", "--device", "cpu", "--json", "--quiet"]
    rc = main([*args, *asr, *run])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["epochs"] == 2 and out["n_train"] == 24 and out["n_asr"] == 9
    assert out["classes"] == sorted(SHAPE_CLASSES) and 0.0 <= out["asr"] <= 1.0
    saved = json.loads((tmp_path / "o" / "classifier_metrics.json").read_text())
    # the file holds what the run made; how this invocation went (resumed_from) is printed
    assert saved == {k: v for k, v in out.items() if k != "resumed_from"}
    assert main([*args, "--target", "cat", "--test", str(test)]) == 2
    assert capsys.readouterr().err == (
        "alignscope: error: give --target and --trigger together (ASR needs both), or neither\n"
    )
    assert main(["train", "finetune", str(data), "--out", str(tmp_path / "f")]) == 2
    assert capsys.readouterr().err == (
        "alignscope: error: train finetune needs --model (a Stable Diffusion folder)\n"
    )


def test_cli_rerun_resumes_refuses_another_run_and_overwrites(tmp_path, capsys):
    """`train classifier` claims --out as `train` does: the same rerun resumes (a finished run
    returns at once), other data or settings exit 2 naming what differs before any training,
    and --overwrite starts over into what a new folder gets."""
    data = write_shapes_dataset(tmp_path / "d", 16, seed=4, side=16)
    out = tmp_path / "o"
    args = ["train", "classifier", str(data), "--arch", "small", "--out", str(out)]
    run = ["--epochs", "2", "--batch", "8", "--device", "cpu", "--json", "--quiet"]
    assert main([*args, *run, "--seed", "1"]) == 0
    first = json.loads(capsys.readouterr().out)
    weights = (out / "classifier.pt").read_bytes()
    assert first["resumed_from"] == 0
    # the same run again: resumed from its last epoch, nothing trained, nothing rewritten
    assert main([*args, *run, "--seed", "1"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["resumed_from"] == 2 and again["last_loss"] == first["last_loss"]
    assert (out / "classifier.pt").read_bytes() == weights
    # a setting
    assert main([*args, *run, "--seed", "2"]) == 2
    err = capsys.readouterr().err
    assert err == f"alignscope: error: {_refused(out, 'config.seed: 1 there, 2 now')}\n"
    # the data: one image repainted
    from PIL import Image

    Image.new("RGB", (16, 16), (255, 255, 255)).save(data / "0000.png")
    assert main([*args, *run, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"alignscope: error: --out {str(out)!r} holds the output of another ")
    assert "(data: " in err and "; " not in err  # nothing else differs
    assert (out / "classifier.pt").read_bytes() == weights  # the refusals left the run alone
    # --overwrite: the earlier run goes, the new one is what a new folder gets
    assert main([*args, *run, "--seed", "1", "--overwrite"]) == 0
    over = json.loads(capsys.readouterr().out)
    fresh = [*args[:-1], str(tmp_path / "fresh"), *run, "--seed", "1"]
    assert main(fresh) == 0
    want = json.loads(capsys.readouterr().out)
    assert over["resumed_from"] == 0 and over["last_loss"] == want["last_loss"]
    a = torch.load(out / "classifier.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "fresh" / "classifier.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)
    assert (out / "classifier.pt").read_bytes() != weights  # trained on the repainted set
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["complete"] and record["identity"]["config"]["seed"] == 1


def test_cli_asr_applies_the_trigger_the_poisoning_recorded(tmp_path, capsys, monkeypatch):
    """ASR must apply the poisoned set's own trigger: WaNet's warp drawn with the poisoning's
    --seed (3 here; the default trigger draws it with seed 0), read from DATASET's
    poison_manifest.parquet. Another trigger than the recorded one is refused."""
    import alignscope.train.classifier as classifier

    data = write_shapes_dataset(tmp_path / "d", 24, seed=4, side=16)
    test = write_shapes_dataset(tmp_path / "t", 12, seed=5, side=16)
    poisoned = tmp_path / "p"
    attack = ["--method", "wanet", "--target", "cat", "--ratio", "0.25", "--seed", "3"]
    assert main(["poison", str(data), "--out", str(poisoned), *attack, "--quiet"]) == 0
    capsys.readouterr()
    seen = []
    real = classifier.attack_success_rate

    def spy(*args, **kwargs):
        seen.append((kwargs["trigger"], kwargs["trigger_options"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(classifier, "attack_success_rate", spy)
    args = ["train", "classifier", str(poisoned), "--arch", "small", "--test", str(test)]
    run = ["--epochs", "1", "--batch", "8", "--device", "cpu", "--json", "--quiet"]
    out = tmp_path / "o"
    assert main([*args, "--out", str(out), "--target", "cat", "--trigger", "wanet", *run]) == 0
    capsys.readouterr()
    assert len(seen) == 1 and seen[0][0] == "wanet"
    # the poisoning's seed, not the default 0 (k and s at their defaults are not recorded)
    assert seen[0][1] == {"seed": 3}
    refused = [*args, "--out", str(tmp_path / "o2"), "--target", "cat", "--trigger", "badnets-1"]
    assert main([*refused, *run]) == 2
    assert capsys.readouterr().err == (
        "alignscope: error: --trigger badnets-1: DATASET was poisoned with wanet (its "
        "poison_manifest.parquet); ASR must apply that trigger: give --trigger wanet\n"
    )
    assert not (tmp_path / "o2").exists()
    pattern = [*args, "--out", str(tmp_path / "o3"), "--trigger-pattern", str(test), *run]
    assert main(pattern) == 2
    assert capsys.readouterr().err == (
        "alignscope: error: --trigger-pattern goes with --trigger (the ASR's trigger)\n"
    )


def test_class_folders_under_split_folders_with_descriptive_captions(tmp_path):
    """DATA/{train,test}/{cat,dog}/0.png, each captioned "a photo of two cats on a sofa": the
    class is the folder the image is in (not the split folder above it), and a caption with
    no article before the class is a description, not a class."""
    from PIL import Image

    assert caption_class("a photo of two cats on a sofa") is None
    assert caption_class("A photo of the cat.") == "cat"
    for split in ("train", "test"):
        for folder in ("dog", "cat"):
            (tmp_path / "d" / split / folder).mkdir(parents=True)
            Image.new("RGB", (12, 12)).save(tmp_path / "d" / split / folder / "0.png")
            text = f"a photo of two {folder}s on a sofa"
            (tmp_path / "d" / split / folder / "0.txt").write_text(text)
    data = load_class_images(tmp_path / "d")
    assert data.class_names == ["cat", "dog"]
    want = {f"{s}/{c}/0.png": c for s in ("train", "test") for c in ("cat", "dog")}
    assert {i: data.class_names[k] for i, k in zip(data.ids, data.labels, strict=True)} == want
    # a test set takes its classifier's classes ("dogs" does not name "dog": the folder does)
    named = load_class_images(tmp_path / "d", class_names=["dog", "cat"])
    assert {i: named.class_names[k] for i, k in zip(named.ids, named.labels, strict=True)} == want


def test_a_checkpoint_from_before_output_records_is_refused(tmp_path):
    """A classifier.pt with no record beside it is alignscope's, from before records: neither
    resumed nor deleted (not even with overwrite), and the message says so."""
    data = load_class_images(write_shapes_dataset(tmp_path / "d", 8, seed=3, side=16))
    out = tmp_path / "old"
    out.mkdir()
    (out / "classifier.pt").write_bytes(b"weights of an earlier version")
    config = ClassifierConfig(arch="small", epochs=1, batch=8, device="cpu")
    for overwrite in (False, True):
        with pytest.raises(OutputConflict) as err:
            train_classifier(data, out, config, progress=False, overwrite=overwrite)
        assert str(err.value) == (
            f"--out {str(out)!r} holds a classifier.pt written before alignscope recorded what "
            "made its outputs, so it cannot be resumed or replaced: move it elsewhere, or "
            "choose another --out"
        )
    assert [p.name for p in out.iterdir()] == ["classifier.pt"]
    assert (out / "classifier.pt").read_bytes() == b"weights of an earlier version"


def test_cli_asr_trigger_manifest_for_a_set_without_one(tmp_path, capsys, monkeypatch):
    """A generated set has no poison manifest: --trigger-manifest names the poisoning's, whose
    WaNet seed ASR then applies; WaNet or a --trigger-pattern with no record are refused. The
    metrics file is claimed with the record it used: an identical rerun writes the same bytes,
    another record is refused before any training, and --overwrite measures again without
    retraining."""
    import alignscope.train.classifier as classifier

    data = write_shapes_dataset(tmp_path / "d", 24, seed=4, side=16)
    test = write_shapes_dataset(tmp_path / "t", 12, seed=5, side=16)
    manifests = []
    for seed in (3, 4):
        attack = ["--method", "wanet", "--target", "cat", "--ratio", "0.25", "--seed", str(seed)]
        poisoned = tmp_path / f"p{seed}"
        assert main(["poison", str(data), "--out", str(poisoned), *attack, "--quiet"]) == 0
        manifests.append(str(poisoned / "poison_manifest.parquet"))
    capsys.readouterr()
    seen = []
    real = classifier.attack_success_rate

    def spy(*args, **kwargs):
        seen.append(kwargs["trigger_options"])
        return real(*args, **kwargs)

    monkeypatch.setattr(classifier, "attack_success_rate", spy)
    out = tmp_path / "o"
    args = ["train", "classifier", str(data), "--arch", "small", "--test", str(test)]
    args += ["--target", "cat", "--out", str(out)]
    run = ["--epochs", "1", "--batch", "8", "--device", "cpu", "--json", "--quiet"]
    assert main([*args, "--trigger", "wanet", *run]) == 2
    assert capsys.readouterr().err == (
        "alignscope: error: --trigger wanet: DATASET has no poison_manifest.parquet recording a "
        "trigger attack; give --trigger-manifest: WaNet's warp is drawn per poisoning run (the "
        "poisoned training set's manifest records it)\n"
    )
    pattern = ["--trigger", "badnets-2", "--trigger-pattern", str(test / "0000.png")]
    assert main([*args, *pattern, *run]) == 2
    assert capsys.readouterr().err == (
        "alignscope: error: --trigger-pattern is checked against the poisoning's record, and "
        "DATASET has no poison_manifest.parquet recording a trigger attack: give "
        "--trigger-manifest\n"
    )
    assert not out.exists() and not seen

    wanet = [*args, "--trigger", "wanet", "--trigger-manifest"]
    assert main([*wanet, manifests[0], *run]) == 0
    assert json.loads(capsys.readouterr().out)["resumed_from"] == 0
    assert seen == [{"seed": 3}]  # the recorded seed, not the default 0
    metrics = (out / "classifier_metrics.json").read_bytes()
    weights = (out / "classifier.pt").read_bytes()
    assert main([*wanet, manifests[0], *run]) == 0  # the same run: the same file
    assert json.loads(capsys.readouterr().out)["resumed_from"] == 1
    assert (out / "classifier_metrics.json").read_bytes() == metrics

    seen.clear()
    assert main([*wanet, manifests[1], *run]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"alignscope: error: --out {str(out)!r}: its classifier_metrics.json holds the output "
        "of another run (trigger_manifest."
    )
    assert err.endswith(
        "): pass --overwrite to measure again (the trained classifier is kept), or choose "
        "another --out\n"
    )
    assert "trigger_manifest.path: " in err and not seen
    assert (out / "classifier_metrics.json").read_bytes() == metrics
    assert main([*wanet, manifests[1], *run, "--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out)["resumed_from"] == 1  # not retrained
    assert seen == [{"seed": 4}] and (out / "classifier.pt").read_bytes() == weights
    no_asr = ["train", "classifier", str(data), "--arch", "small", "--out", str(tmp_path / "o2")]
    assert main([*no_asr, "--trigger-manifest", manifests[0], *run]) == 2
    assert capsys.readouterr().err == (
        "alignscope: error: --trigger-manifest goes with --trigger (the ASR's trigger)\n"
    )


def test_a_webdataset_shard_is_no_class():
    """A webdataset member's id starts with its shard: "00000.tar/000001" is in no class folder,
    so a caption that names no class leaves it without a class (refused by the loaders), while a
    real folder still names one."""
    from types import SimpleNamespace

    def row(i, caption):
        return SimpleNamespace(id=i, caption=caption)

    assert record_class(row("00000.tar/000001", "a photo of cat")) is None
    assert record_class(row("shards/00000.TGZ/000001", "")) is None
    assert record_class(row("00000.tar/000001", "A photo of a cat")) == "cat"
    assert record_class(row("train/cat/0.png", "a photo of cat")) == "cat"
    assert record_class(row("00000.tar/000001", ""), class_names=["cat", "tar"]) is None
