"""Loaders that would download from a hub fail at once, with the local form to use, when the
files are not cached and the hub cannot be reached. Nothing here touches the network: the
connect is replaced, and every download function is replaced by one that fails the test."""

from __future__ import annotations

import socket
import threading

import pytest

from alignscope import _hub

HUB_OFFLINE = "not in the local cache, and huggingface.co cannot be reached (HF_HUB_OFFLINE is set)"


def _no_download(*args, **kwargs):
    raise AssertionError(f"a download was attempted: {args} {kwargs}")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty hub cache, no proxy, no mirror, HF_HUB_OFFLINE=1, and no connect allowed."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(_hub.urllib.request, "getproxies", dict)
    for name in ("HF_ENDPOINT", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", _no_download)
    return tmp_path / "hub"


@pytest.fixture
def no_open_clip_download(monkeypatch):
    open_clip = pytest.importorskip("open_clip")
    from open_clip import factory, pretrained

    for module in (pretrained, factory):
        monkeypatch.setattr(module, "download_pretrained", _no_download)
    monkeypatch.setattr(pretrained, "download_pretrained_from_hf", _no_download)
    monkeypatch.setattr(pretrained, "download_pretrained_from_url", _no_download)
    return open_clip


def test_an_open_clip_tag_is_refused_at_once_when_offline(offline, no_open_clip_download):
    from alignscope.embed import load_clip

    with pytest.raises(ValueError) as info:
        load_clip("open_clip:ViT-B-32:openai")
    assert str(info.value) == (
        f"open_clip:ViT-B-32:openai: could not load the weights 'openai' ({HUB_OFFLINE}); "
        "offline, give a local checkpoint: open_clip:ViT-B-32:/path/to/weights.pt"
    )


def test_the_cli_prints_the_offline_hint(offline, no_open_clip_download, tmp_path, capsys):
    from PIL import Image

    from alignscope.cli import main

    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (8, 8)).save(data / "0.png")
    (data / "0.txt").write_text("a dog")
    argv = ["embed", str(data), "--out", str(tmp_path / "s"), "--clip", "open_clip:RN50:openai"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"alignscope: error: open_clip:RN50:openai: could not load the weights 'openai' "
        f"({HUB_OFFLINE}); offline, give a local checkpoint: open_clip:RN50:/path/to/weights.pt\n"
    )


def test_a_connect_that_fails_refuses_without_a_download(
    offline, no_open_clip_download, monkeypatch
):
    """No offline variable: the one connect (to the hub, port 443, 3 s) decides."""
    from alignscope.embed import load_clip

    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls = []

    def unreachable(address, timeout=None):
        calls.append((address, timeout))
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(ValueError) as info:
        load_clip("open_clip:ViT-B-32:laion2b_s34b_b79k")
    assert calls == [(("huggingface.co", 443), 3.0)]
    assert str(info.value) == (
        "open_clip:ViT-B-32:laion2b_s34b_b79k: could not load the weights 'laion2b_s34b_b79k' "
        "(not in the local cache, and huggingface.co cannot be reached (huggingface.co:443: "
        "[Errno 101] Network is unreachable)); offline, give a local checkpoint: "
        "open_clip:ViT-B-32:/path/to/weights.pt"
    )


def test_cached_weights_are_not_checked_against_the_network(
    offline, no_open_clip_download, monkeypatch
):
    """The tag's weights in the hub cache (the layout huggingface_hub writes): no connect, no
    refusal; open_clip is asked to build the model (stubbed: it raises a marker)."""
    open_clip = no_open_clip_download
    repo = offline / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "open_clip_model.safetensors").write_bytes(b"")

    def build(*args, **kwargs):
        raise RuntimeError("built from the cache")

    from alignscope.embed import load_clip

    monkeypatch.setattr(open_clip, "create_model_and_transforms", build)
    with pytest.raises(ValueError, match=r"could not load the weights 'openai' \(built from"):
        load_clip("open_clip:ViT-B-32:openai")


def test_without_huggingface_hub_the_url_host_is_checked(
    offline, no_open_clip_download, monkeypatch, tmp_path
):
    """open_clip falls back to the tag's URL (cached under ~/.cache/clip) when it cannot use the
    hub: the check names that host."""
    monkeypatch.setattr(no_open_clip_download.pretrained, "has_hf_hub", lambda *a: False)
    monkeypatch.setenv("HOME", str(tmp_path))  # an empty ~/.cache/clip
    from alignscope.embed import load_clip

    with pytest.raises(ValueError, match=r"openaipublic\.azureedge\.net cannot be reached"):
        load_clip("open_clip:ViT-B-32:openai")


def test_an_hf_hub_id_is_refused_at_once_when_offline(offline, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setattr(transformers.CLIPModel, "from_pretrained", _no_download)
    from alignscope.embed import load_clip

    with pytest.raises(ValueError) as info:
        load_clip("hf:openai/clip-vit-base-patch32")
    assert str(info.value) == (
        "hf:openai/clip-vit-base-patch32: 'openai/clip-vit-base-patch32' is not a local folder, "
        f"and as a hub id it is {HUB_OFFLINE}; offline, give a local folder saved with "
        "save_pretrained: hf:/path/to/clip"
    )


def test_a_vae_and_an_anchor_pipeline_hub_id_are_refused_at_once_when_offline(offline, monkeypatch):
    diffusers = pytest.importorskip("diffusers")
    monkeypatch.setattr(diffusers.AutoencoderKL, "from_pretrained", _no_download)
    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", _no_download)
    from alignscope._diffusers import load_vae
    from alignscope.poison.anchors import load_pipeline

    with pytest.raises(ValueError) as info:
        load_vae("stabilityai/sd-vae-ft-mse")
    assert str(info.value) == (
        f"'stabilityai/sd-vae-ft-mse' is not a local folder, and as a hub id it is {HUB_OFFLINE}; "
        "offline, give a local folder: a diffusers AutoencoderKL folder or a Stable Diffusion "
        "folder (its vae/ subfolder)"
    )
    with pytest.raises(ValueError) as info:
        load_pipeline("runwayml/stable-diffusion-v1-5")
    assert str(info.value) == (
        f"'runwayml/stable-diffusion-v1-5' is not a local folder, and as a hub id it is "
        f"{HUB_OFFLINE}; offline, give a local diffusers pipeline folder (with model_index.json)"
    )


def test_a_connect_without_an_answer_gives_up_after_the_timeout(monkeypatch):
    """A dropped connect (no error, no answer) counts as unreachable after HUB_TIMEOUT_S."""
    release = threading.Event()

    def hang(address, timeout=None):
        release.wait()
        raise OSError("released")

    monkeypatch.setattr(socket, "create_connection", hang)
    monkeypatch.setattr(_hub, "HUB_TIMEOUT_S", 0.05)
    monkeypatch.setattr(_hub.urllib.request, "getproxies", dict)
    for name in _hub.OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    try:
        assert _hub.unreachable("https://hub.example") == (
            "no answer from hub.example:443 within 0.05 s"
        )
    finally:
        release.set()


def test_the_check_connects_to_the_proxy_when_one_is_set(monkeypatch):
    calls = []

    def connect(address, timeout=None):
        calls.append(address)
        return socket.socket()  # closed at once by the check

    monkeypatch.setattr(socket, "create_connection", connect)
    monkeypatch.setattr(
        _hub.urllib.request, "getproxies", lambda: {"https": "http://proxy.example:3128"}
    )
    monkeypatch.setattr(_hub.urllib.request, "proxy_bypass", lambda host: False)
    for name in _hub.OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert _hub.unreachable("https://huggingface.co") is None
    assert calls == [("proxy.example", 3128)]
