"""The LAION aesthetics head against torch's own forward pass of the published layouts."""

from __future__ import annotations

import numpy as np
import pytest

from alignscope.evaluate.aesthetics import AestheticsHead

torch = pytest.importorskip("torch")


def _improved(dim: int):
    # the improved predictor's layout: Linear, Dropout, Linear, Dropout, Linear, Dropout,
    # Linear, Linear (no nonlinearity)
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(dim, 1024),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(1024, 128),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(128, 64),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(64, 16),
        torch.nn.Linear(16, 1),
    ).eval()


def _reference(net, x: np.ndarray) -> np.ndarray:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    with torch.no_grad():
        return net(torch.from_numpy(unit).double()).numpy()[:, 0]


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_improved_predictor_layout(tmp_path, rng, suffix):
    net = _improved(32)
    state = {f"layers.{k}": v for k, v in net.state_dict().items()}
    path = tmp_path / f"head{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    head = AestheticsHead.load(path)
    x = rng.standard_normal((7, 32))
    np.testing.assert_allclose(head(x), _reference(net.double(), x), rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match=r"image_embeddings must be \(n, 32\)"):
        head(x[:, :16])


def test_linear_layout_and_bad_files(tmp_path, rng):
    torch.manual_seed(1)
    lin = torch.nn.Linear(8, 1)
    torch.save(lin.state_dict(), tmp_path / "lin.pth")
    x = rng.standard_normal((3, 8))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = unit @ lin.weight.detach().double().numpy()[0] + float(lin.bias.detach())
    np.testing.assert_allclose(AestheticsHead.load(tmp_path / "lin.pth")(x), expected, rtol=1e-6)
    torch.save({"other.weight": torch.zeros(1, 8)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="have neither layout"):
        AestheticsHead.load(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="do not exist"):
        AestheticsHead.load(tmp_path / "missing.pth")
    (tmp_path / "head.txt").write_text("x")
    with pytest.raises(ValueError, match=r"expected \.pth, \.pt, \.bin, \.safetensors or \.npz"):
        AestheticsHead.load(tmp_path / "head.txt")
