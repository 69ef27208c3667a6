"""`alignscope defend vespr` end to end on a tiny poisoned class set, and its input errors."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from alignscope.cli import main  # noqa: E402
from alignscope.defend.models import build_network  # noqa: E402
from alignscope.defend.ssl import SSLConfig  # noqa: E402
from alignscope.defend.toy import gratings, write_folder  # noqa: E402
from alignscope.defend.vespr import DEFEND_METHODS, DefendConfig, run_row  # noqa: E402

CLASSES = ["cat", "dog", "fox", "owl"]
FAST = ["--arch", "small", "--width", "4", "--epochs", "1", "--sl-epochs", "1",
        "--batch-size", "16", "--at-steps", "1", "--device", "cpu", "--quiet"]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def _record_training(monkeypatch, method):
    """Run the table's row ``method`` (``ssl`` or ``vespr``) on a tiny set, recording what PGD
    was asked and gave (the views, their labels, the adversaries, and the head's cross-entropy
    on both as the attack saw the network), the batches the encoder learned from (its inputs
    in training mode) and the trained encoder."""
    import alignscope.defend.ssl as ssl_module
    import alignscope.defend.vespr as vespr_module

    attacks, learned, encoders = [], [], []
    real_pgd, real_modules, real_train = ssl_module.pgd, ssl_module._modules, ssl_module.train_ssl

    def recording_pgd(model, x, y, **options):
        adv = real_pgd(model, x, y, **options)
        with torch.no_grad():
            ce = torch.nn.functional.cross_entropy
            attacks.append((x, y, adv, float(ce(model(x), y)), float(ce(model(adv), y))))
        return adv

    def recording_modules(config, n_classes):
        encoder, projector = real_modules(config, n_classes)

        def seen(module, inputs):
            if module.training:
                learned.append(inputs[0].detach().clone())

        encoder.body.register_forward_pre_hook(seen)
        return encoder, projector

    def recording_train(*args, **kwargs):
        encoders.append(real_train(*args, **kwargs))
        return encoders[-1]

    monkeypatch.setattr(ssl_module, "pgd", recording_pgd)
    monkeypatch.setattr(ssl_module, "_modules", recording_modules)
    monkeypatch.setattr(vespr_module, "train_ssl", recording_train)
    images, labels = gratings(6, 4, 8, seed=4)
    ssl = SSLConfig(epochs=2, batch_size=12, width=4, proj_dim=8, at_steps=3, device="cpu")
    config = DefendConfig(ssl=ssl, probe_steps=1)
    run_row(method, images, labels, images, labels, 4, config)
    return attacks, learned, encoders[0], labels


def test_vespr_learns_from_views_attacked_to_raise_the_supervised_loss(monkeypatch):
    # VESPR's defence is its adversary: each training view is moved within eps_AT = 8/255 to
    # raise the supervised head's cross-entropy (the poison's shortcut is what such a move
    # breaks first), and the encoder learns from the moved views with that head. A `vespr` row
    # that ran plain SimCLR, skipped the attack, or attacked but trained on the unmoved views
    # fails here.
    attacks, learned, encoder, labels = _record_training(monkeypatch, "vespr")
    batches = 2 * 2  # 24 images in batches of 12, 2 epochs
    assert len(attacks) == 2 * batches and len(learned) == 2 * batches  # both views, each batch
    for epoch in (0, 1):  # each epoch attacks every image under its own label
        ys = [attacks[4 * epoch + k][1] for k in (0, 2)]  # the first view of both batches
        assert sorted(torch.cat(ys).tolist()) == sorted(labels.tolist())
    eps = 8 / 255
    for (x, _, adv, ce_before, ce_after), seen in zip(attacks, learned, strict=True):
        moved = (adv - x).abs()
        assert float(moved.max()) <= eps + 1e-6  # within the budget ...
        assert float(moved.max()) >= eps - 1e-6  # ... and using it, not a zero perturbation
        assert ce_after > ce_before  # towards a higher supervised loss
        torch.testing.assert_close(seen, adv, rtol=0, atol=0)  # the encoder learns from them
    # plain SimCLR (the no-defence row): no attack, and its head is never trained, so it stays
    # at its seeded initialisation while VESPR's moved away from that same start
    plain_attacks, plain_learned, plain, _ = _record_training(monkeypatch, "ssl")
    assert plain_attacks == [] and len(plain_learned) == 2 * batches
    torch.manual_seed(0)
    init = build_network("small", 4, width=4).head.weight
    assert torch.equal(plain.head.weight, init)
    assert not torch.allclose(encoder.head.weight, init, atol=1e-3)
