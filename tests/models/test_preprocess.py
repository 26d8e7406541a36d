"""Preprocessing: "native" equals the checkpoints' HF image processors; "squash" keeps boxes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
import transformers as tf

import ssl_jax
from ssl_jax.models.config import bundled_checkpoint_files, bundled_spec

SIZES = [(300, 400), (480, 360), (224, 224), (97, 513), (1000, 750)]
PROCESSORS = {"dinov2": "BitImageProcessorPil", "mae": "ViTImageProcessorPil",
              "clip": "CLIPImageProcessorPil", "siglip2": "SiglipImageProcessorPil"}


def _image(rng, h, w):
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parity
@pytest.mark.parametrize("alias", PROCESSORS)
def test_native_matches_hf_processor(alias, rng):
    proc = getattr(tf, PROCESSORS[alias])(**bundled_checkpoint_files(alias)["preprocessor_config"])
    spec = bundled_spec(alias)
    for h, w in SIZES:
        img = _image(rng, h, w)
        theirs = proc(images=img, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
        ours, (t,) = ssl_jax.preprocess(spec, img, mode="native")
        assert ours.shape == (1, *theirs.shape)
        assert np.abs(ours[0] - theirs).max() <= 1e-5, (alias, h, w)
        assert t.input_size == theirs.shape[:2]


@pytest.mark.parity
def test_dinov3_native_matches_torch_float_resize(rng):
    """DINOv3's processor exists only for torchvision: rescale, antialiased bilinear resize of
    float pixels, normalise. Reproduced here with torch.nn.functional.interpolate."""
    spec = bundled_spec("dinov3")
    mean = torch.tensor(spec.preprocessing.mean)[:, None, None]
    std = torch.tensor(spec.preprocessing.std)[:, None, None]
    for h, w in SIZES:
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() * (1 / 255)
        x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True,
                                            align_corners=False)
        theirs = ((x - mean) / std)[0].permute(1, 2, 0).numpy()
        ours, _ = ssl_jax.preprocess(spec, arr, mode="native")
        assert np.abs(ours[0] - theirs).max() <= 1e-5, (h, w)


def test_squash_keeps_the_whole_image_and_maps_boxes(rng):
    spec = bundled_spec("dinov2")  # native would crop 256-shortest-edge → 224
    img = _image(rng, 300, 600)
    pixels, (t,) = ssl_jax.preprocess(spec, img, mode="squash")
    assert pixels.shape == (1, 224, 224, 3)
    assert (t.scale_x, t.scale_y, t.offset_x, t.offset_y) == (224 / 600, 224 / 300, 0.0, 0.0)
    whole = np.array([0, 0, 600, 300])
    np.testing.assert_allclose(t.boxes_to_input(whole), [0, 0, 224, 224])
    # native crop: the transform carries the crop offset, and inverts exactly
    _, (tn,) = ssl_jax.preprocess(spec, img, mode="native")
    assert tn.input_size == (224, 224) and tn.offset_x == (512 - 224) // 2 and tn.offset_y == 16
    box = np.array([[100.0, 50.0, 400.0, 250.0]])
    np.testing.assert_allclose(tn.boxes_to_original(tn.boxes_to_input(box)), box)
    # a pixel at the input centre came from the original centre
    np.testing.assert_allclose(tn.boxes_to_original(np.array([112, 112, 112, 112])),
                               [300, 150, 300, 150], atol=1e-9)


def test_squash_matches_pil_resize_exactly(rng):
    spec = bundled_spec("siglip2")
    arr = rng.integers(0, 256, (123, 321, 3), dtype=np.uint8)
    ours, _ = ssl_jax.preprocess(spec, arr)
    resized = np.asarray(Image.fromarray(arr).resize((224, 224), Image.BILINEAR), np.float64)
    expected = ((resized / 255).astype(np.float32) - 0.5) / 0.5
    np.testing.assert_array_equal(ours[0], expected.astype(np.float32))


def test_input_kinds_and_errors(rng):
    spec = bundled_spec("clip")
    gray = rng.integers(0, 256, (50, 60), dtype=np.uint8)
    rgba = rng.integers(0, 256, (50, 60, 4), dtype=np.uint8)
    px, ts = ssl_jax.preprocess(spec, [gray, rgba, Image.fromarray(gray)])
    assert px.shape == (3, 224, 224, 3) and len(ts) == 3
    np.testing.assert_array_equal(px[0], px[2])  # grey array == grey PIL image
    with pytest.raises(TypeError, match="image 0: expected a PIL image or a uint8 array"):
        ssl_jax.preprocess(spec, np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="mode must be"):
        ssl_jax.preprocess(spec, gray, mode="crop")
    with pytest.raises(ValueError, match="at least one image"):
        ssl_jax.preprocess(spec, [])
