from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20241022)


def _byte_chars() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for the byte values (GPT-2's table)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


@pytest.fixture(scope="session")
def byte_vocab(tmp_path_factory) -> Path:
    """A directory with vocab.json and merges.txt of a tiny byte-level CLIP tokenizer (no merges):
    enough for transformers' CLIPTokenizer offline."""
    return write_byte_vocab(tmp_path_factory.mktemp("byte_vocab"))


@pytest.fixture
def aesthetics_head(tmp_path) -> Path:
    """A LAION aesthetics head file with random weights for the tiny CLIP (16 dims)."""
    pytest.importorskip("torch")
    return write_aesthetics_head(tmp_path / "aesthetics.pth")


def write_aesthetics_head(path: Path) -> Path:
    """Random weights (seeded) in the LAION improved predictor's key layout, on the tiny CLIP's
    16 dims; the last bias shifted so scores sit near the 6.5 threshold."""
    import torch

    torch.manual_seed(3)
    sizes = [(16, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]
    state = {}
    for index, (n_in, n_out) in zip((0, 2, 4, 6, 7), sizes, strict=True):
        layer = torch.nn.Linear(n_in, n_out)
        state[f"layers.{index}.weight"] = layer.weight.detach()
        state[f"layers.{index}.bias"] = layer.bias.detach() + (6.5 if index == 7 else 0.0)
    torch.save(state, path)
    return path


def write_byte_vocab(root: Path) -> Path:
    """vocab.json and merges.txt of the byte-level tokenizer into ``root`` (the fixture above,
    also used by benchmarks/bench_evaluate.py)."""
    root.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    return root


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test: the machine's cores are shared (CI, workers), tiny
    models gain nothing from more, and one thread makes CPU float results repeat run to run.
    Modules that train or score with torch use it for every test:
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cuda_stand_in(monkeypatch) -> list:
    """Install the fp16 stand-in kernel (alignscope._reference.cuda_kernel_pair_abs_sum) as a
    built ``alignscope._cuda`` with one visible device; returns the kernel's call log."""
    import sys
    import types

    import alignscope
    from alignscope import _reference

    calls: list = []

    def host(*args):
        calls.append(args)
        return _reference.cuda_kernel_pair_abs_sum(*args)

    fake = types.ModuleType("alignscope._cuda")
    fake.tile = 128
    fake.device_count = lambda: 1
    fake.device_name = lambda i: "fp16 stand-in"
    fake.pair_abs_sum_host = host
    monkeypatch.setitem(sys.modules, "alignscope._cuda", fake)
    monkeypatch.setattr(alignscope, "_cuda", fake, raising=False)
    return calls


# Tiny models built from configs with random weights, written to local files (no hub).
@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory) -> str:
    pytest.importorskip("open_clip")
    root = tmp_path_factory.mktemp("oc")
    config = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "patch_size": 8,
            "head_width": 16,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    }
    (root / "alignscope-tiny.json").write_text(json.dumps(config))
    # the config-file form of the spec registers the model in whichever process loads it
    return f"open_clip:{root / 'alignscope-tiny.json'}"


@pytest.fixture(scope="session")
def tiny_hf_clip(tmp_path_factory, byte_vocab) -> str:
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("hf")
    for name in ("vocab.json", "merges.txt"):
        (root / name).write_bytes((byte_vocab / name).read_bytes())
    vocab_size = len(json.loads((root / "vocab.json").read_text()))
    config = transformers.CLIPConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "max_position_embeddings": 24,
            "bos_token_id": vocab_size - 2,
            "eos_token_id": vocab_size - 1,
            "pad_token_id": vocab_size - 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    transformers.CLIPModel(config).save_pretrained(root)
    transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(root)
    return f"hf:{root}"


def _sscd_net():
    import torch

    class TinySSCD(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 24, 5, stride=2)
            self.head = torch.nn.Linear(24, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.nn.functional.relu(self.conv(x)).mean(dim=(2, 3))
            return torch.nn.functional.normalize(self.head(h), dim=1)

    return TinySSCD().eval()


@pytest.fixture(scope="session")
def tiny_sscd(tmp_path_factory) -> dict[str, Path]:
    torch = pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("sscd")
    net = _sscd_net()
    files = {"torchscript": root / "sscd_tiny.torchscript"}
    with warnings.catch_warnings():  # TorchScript is deprecated in torch, but it is SSCD's format
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(net).save(str(files["torchscript"]))
    pytest.importorskip("onnx", reason="onnx exports need the onnx package")
    with warnings.catch_warnings():  # the TorchScript-based exporter needs no onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        _export_onnx(torch, net, root, files)
    return files


def _export_onnx(torch, net, root: Path, files: dict[str, Path]) -> None:
    """Float NCHW and uint8 NHWC (preprocessing in the graph) exports of the tiny net."""
    files["onnx"] = root / "sscd_tiny.onnx"
    torch.onnx.export(
        net,
        (torch.zeros(1, 3, 64, 64),),
        str(files["onnx"]),
        input_names=["x"],
        dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}},
        dynamo=False,
    )

    class Uint8Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x.permute(0, 3, 1, 2).float() / 255.0
            return self.net((y - self.mean) / self.std)

    files["onnx_uint8"] = root / "sscd_tiny_uint8.onnx"
    torch.onnx.export(
        Uint8Wrapper().eval(),
        (torch.zeros(1, 96, 96, 3, dtype=torch.uint8),),
        str(files["onnx_uint8"]),
        input_names=["img"],
        dynamic_axes={"img": {0: "n"}},
        dynamo=False,
    )


def tiny_vae_model(seed: int = 0):
    """A tiny AutoencoderKL (2 blocks, 4 latent channels, scale factor 2) with seeded weights."""
    diffusers = pytest.importorskip("diffusers")
    import torch

    torch.manual_seed(seed)
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=32,
    )


@pytest.fixture(scope="session")
def tiny_vae():
    return tiny_vae_model()


def build_tiny_sd(byte_vocab: Path, seed: int = 0):
    """A complete tiny Stable Diffusion pipeline (random weights) from configs."""
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    import torch

    vae = tiny_vae_model(seed)
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        norm_num_groups=8,
        attention_head_dim=4,
    )
    vocab_size = len(json.loads((byte_vocab / "vocab.json").read_text()))
    text = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=1,
            max_position_embeddings=32,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    )
    tokenizer = transformers.CLIPTokenizer(
        str(byte_vocab / "vocab.json"), str(byte_vocab / "merges.txt"), model_max_length=32
    )
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


@pytest.fixture(scope="session")
def tiny_sd_factory(byte_vocab):
    """build_tiny_sd(seed=0) -> a fresh tiny pipeline, for tests that change its configs."""

    def make(seed: int = 0):
        return build_tiny_sd(byte_vocab, seed)

    return make


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory, byte_vocab) -> Path:
    root = tmp_path_factory.mktemp("tiny_sd")
    build_tiny_sd(byte_vocab).save_pretrained(root / "sd")
    return root / "sd"
