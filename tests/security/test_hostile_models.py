"""Hostile model files: TorchScript programs that read, write or print, code that runs on load,
custom operators, and files that are not models at all. Each is refused with one line naming the
file before any of its code runs; ``--trust-models`` runs it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from alignscope.cli import main

torch = pytest.importorskip("torch")

from alignscope._torchscript import (  # noqa: E402  (needs torch, skipped above without it)
    ALLOWED_OPS,
    UntrustedModel,
    load_torchscript,
    operators,
)


def _save(module: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(module).save(str(path))
    return path


class _Head(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.conv(x).mean(dim=(2, 3)), dim=1)


def _reader(secret: str) -> torch.nn.Module:
    """An 'SSCD model' that copies the first bytes of ``secret`` into its descriptor."""

    class Reader(_Head):
        def __init__(self) -> None:
            super().__init__()
            self.secret = secret

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            leak = torch.from_file(self.secret, shared=False, size=8, dtype=torch.uint8)
            return self.features(x) + leak.float().sum() * 0.0

    return Reader()


class _Writer(_Head):
    """The write is in a helper of a submodule, reached only through calls."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def scribble(self) -> torch.Tensor:
        return torch.from_file(self.target, shared=True, size=4, dtype=torch.uint8).fill_(65)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x) + self.scribble().float().sum() * 0.0


class _Wrapper(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class _Printer(_Head):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("hello from the model")
        return self.features(x)


class _DormantReader(_Head):
    """forward is clean; an exported method nobody calls reads a file."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    @torch.jit.export
    def later(self) -> torch.Tensor:
        return torch.from_file("/etc/hostname", shared=False, size=1, dtype=torch.uint8)


class _OnLoad(torch.nn.Module):
    """__setstate__ runs inside torch.jit.load, before any check after loading could."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.ones(1)

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.scale, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        print("SETSTATE RAN")
        self.scale = state[0]
        self.training = state[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_bytes(b"hunter2!")
    path.chmod(0o600)
    return path


def test_a_model_that_reads_a_file_is_refused_before_it_runs(tmp_path, secret):
    from alignscope.embed import SSCDEncoder

    path = _save(_reader(str(secret)), tmp_path / "sscd.pt")
    with pytest.raises(UntrustedModel) as err:
        SSCDEncoder(path, "sscd-square")
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message and "forward uses operator aten::from_file" in message
    assert "--trust-models" in message


def test_a_write_hidden_in_a_submodule_helper_is_found(tmp_path):
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"zzzz")
    path = _save(_Wrapper(_Writer(str(victim))), tmp_path / "w.pt")
    with pytest.raises(UntrustedModel, match=r"method forward uses operator aten::from_file"):
        load_torchscript(path)
    assert victim.read_bytes() == b"zzzz"


def test_print_and_dormant_methods_are_refused(tmp_path):
    with pytest.raises(UntrustedModel, match=r"forward uses operator prim::Print"):
        load_torchscript(_save(_Printer(), tmp_path / "p.pt"))
    with pytest.raises(UntrustedModel, match=r"method later uses operator aten::from_file"):
        load_torchscript(_save(_DormantReader(), tmp_path / "d.pt"))


def test_code_that_runs_on_load_is_refused_without_loading(tmp_path, capfd):
    path = _save(_OnLoad(), tmp_path / "s.pt")
    capfd.readouterr()
    with pytest.raises(UntrustedModel, match=r"defines __setstate__, which would run on load"):
        load_torchscript(path)
    assert "SETSTATE RAN" not in capfd.readouterr().out
    load_torchscript(path, trust=True)  # the user vouches: it loads, and its code ran
    assert "SETSTATE RAN" in capfd.readouterr().out


def test_custom_operators_are_refused(tmp_path):
    name = "alignscope_hostile_test"
    if not hasattr(torch.ops, name) or not hasattr(getattr(torch.ops, name), "twice"):
        lib = torch.library.Library(name, "DEF")
        lib.define("twice(Tensor x) -> Tensor")
        lib.impl("twice", lambda x: 2 * x, "CompositeExplicitAutograd")
        test_custom_operators_are_refused.lib = lib  # keep the registration alive

    class Custom(_Head):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ops.alignscope_hostile_test.twice(self.features(x))

    with pytest.raises(UntrustedModel, match=rf"uses operator {name}::twice"):
        load_torchscript(_save(Custom(), tmp_path / "c.pt"))


def test_files_that_are_not_models_are_one_line_errors(tmp_path):
    from alignscope.embed import SSCDEncoder

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"%!PS-Adobe-3.0\n" + bytes(range(256)))
    with pytest.raises(ValueError, match=r"junk.pt' is not a readable TorchScript archive"):
        SSCDEncoder(junk)
    with pytest.raises(ValueError, match=r"junk.pt' cannot be loaded as TorchScript"):
        SSCDEncoder(junk, trust_models=True)
    onnx = tmp_path / "junk.onnx"
    onnx.write_bytes(b"\x08\x07" + bytes(300))
    pytest.importorskip("onnxruntime")
    with pytest.raises(ValueError, match=r"junk.onnx' cannot be loaded as ONNX") as err:
        SSCDEncoder(onnx)
    assert "\n" not in str(err.value)


def test_ordinary_vision_models_pass(tmp_path, tiny_sscd):
    tv = pytest.importorskip("torchvision")
    load_torchscript(tiny_sscd["torchscript"])
    net = tv.models.resnet18(weights=None).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, torch.zeros(1, 3, 64, 64), check_trace=False)
    traced.save(str(tmp_path / "traced.pt"))
    _save(net, tmp_path / "scripted.pt")
    for name in ("traced.pt", "scripted.pt"):
        module = load_torchscript(tmp_path / name)
        assert set(operators(module)) <= ALLOWED_OPS
        with torch.no_grad():
            assert module(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def _tiny_folder(root: Path, n: int = 3) -> Path:
    from PIL import Image

    root.mkdir()
    for i in range(n):
        Image.new("RGB", (40, 40), (20 * i, 60, 90)).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"picture {i}")
    return root


def test_cli_embed_refuses_the_model_and_writes_nothing(tmp_path, secret, capsys):
    data = _tiny_folder(tmp_path / "data")
    model = _save(_reader(str(secret)), tmp_path / "sscd.pt")
    out = tmp_path / "out"
    argv = ["embed", str(data), "--out", str(out), "--sscd", str(model), "--quiet"]
    assert main([*argv, "--sscd-preset", "sscd-square"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "aten::from_file" in err and str(model) in err
    assert not out.exists() or not any(out.rglob("*.npy"))
    # trusted, the same file runs (and, as its author meant, reads the secret)
    assert main([*argv, "--sscd-preset", "sscd-square", "--trust-models"]) == 0
    assert np.load(out / "sscd_emb" / "sscd_emb_0.npy").shape == (3, 8)


def test_evaluation_refuses_model_files_before_generating(tmp_path, secret):
    from alignscope.evaluate.dissection import ClassClassifier, TriggerDetector
    from alignscope.evaluate.run import Dissection, EvalConfig

    evil = _save(_reader(str(secret)), tmp_path / "cls.pt")
    config = EvalConfig(
        concepts=["dog"],
        dissection=Dissection(target_class="dog", class_names=["dog", "cat"], classifier=str(evil)),
    )
    with pytest.raises(UntrustedModel, match=r"cls.pt'.*aten::from_file"):
        config.check()
    config.trust_models = True
    config.check()
    with pytest.raises(UntrustedModel):
        ClassClassifier.torchscript(evil, ["dog", "cat"], size=32)
    with pytest.raises(UntrustedModel):
        TriggerDetector.torchscript(evil)
