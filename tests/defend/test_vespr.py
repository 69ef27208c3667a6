"""`alignscope defend vespr` end to end on a tiny poisoned class set, and its input errors."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from alignscope.cli import main  # noqa: E402
from alignscope.defend.toy import gratings, write_folder  # noqa: E402
from alignscope.defend.vespr import DEFEND_METHODS  # noqa: E402

CLASSES = ["cat", "dog", "fox", "owl"]
FAST = ["--arch", "small", "--width", "4", "--epochs", "1", "--sl-epochs", "1",
        "--batch-size", "16", "--at-steps", "1", "--device", "cpu", "--quiet"]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def sets(tmp_path):
    images, labels = gratings(6, 4, 8, seed=1)
    write_folder(tmp_path / "train", images, labels, CLASSES)
    images, labels = gratings(3, 4, 8, seed=2)
    write_folder(tmp_path / "test", images, labels, CLASSES)
    return tmp_path / "train", tmp_path / "test"


def test_defend_vespr_writes_the_accuracy_table_and_resumes(tmp_path, sets, capsys):
    train, test = sets
    poisoned = tmp_path / "poisoned"
    assert main(["poison", str(train), "--out", str(poisoned), "--method", "classwise-noise",
                 "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    out = tmp_path / "out"
    args = ["defend", "vespr", str(poisoned), "--test", str(test), "--out", str(out), *FAST]
    assert main(args) == 0
    printed = capsys.readouterr().out
    table = json.loads((out / "defend_table.json").read_text())
    assert [r["method"] for r in table["rows"]] == list(DEFEND_METHODS)
    for row in table["rows"]:
        # 12 test images: every accuracy is a whole number of them
        assert 0 <= row["accuracy"] <= 1 and round(row["accuracy"] * 12, 6).is_integer()
    assert table["chance"] == 0.25 and table["classes"] == CLASSES
    assert (out / "defend_table.txt").read_text() == printed
    assert printed.splitlines()[0].split() == ["method", "clean", "acc", "evaluation"]
    assert (out / "checkpoints" / "vespr.pt").exists()
    # a second run with the same inputs and settings reads the finished rows back
    (out / "checkpoints" / "vespr.pt").unlink()
    assert main(args) == 0
    assert json.loads((out / "defend_table.json").read_text()) == table
    assert not (out / "checkpoints" / "vespr.pt").exists()


def test_defend_vespr_input_errors(tmp_path, sets, capsys):
    train, test = sets
    other = tmp_path / "other"
    images, labels = gratings(1, 4, 8, seed=3)
    write_folder(other, images, labels, ["cat", "dog", "fox", "yak"])
    base = ["defend", "vespr", str(train), "--out", str(tmp_path / "o"), *FAST]
    assert main([*base, "--test", str(other)]) == 2
    assert capsys.readouterr().err.strip() == (
        "alignscope: error: --test: class 'yak' is not a class of the training data (cat, dog, "
        "fox, owl); the test set must use the training set's class names"
    )
    assert main([*base, "--test", str(test), "--methods", "ssl,byol"]) == 2
    assert capsys.readouterr().err.strip() == (
        "alignscope: error: --methods: unknown method 'byol'; choose from sl, sl-at, ssl, "
        "ssl-jpeg, vespr, random-init"
    )
