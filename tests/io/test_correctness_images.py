"""Issue 12, cases 3, 7c and 10: one image loader for every command — every PIL mode read
correctly (16-bit greyscale was all white), decompression bombs and unreadable files refused
with a one-line error naming the file, EXIF orientation detected (warned in the stored frame,
applied with boxes in the same frame under orientation = "exif")."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from ssl_jax.core.errors import UserError
from ssl_jax.io.dataset import load_image, rasterize, union_mask
from ssl_jax.io.images import (
    INVERSE,
    ImageError,
    OrientationWarning,
    load_rgb,
    orient_array,
    orient_boxes,
    orient_stack,
    oriented_size,
    to_rgb,
)
from ssl_jax.metrics.masks import box_edges, edges_to_masks

# ---- case 3: every PIL mode ------------------------------------------------------------------


def _grey16(h=48, w=64, mean8=144.7):
    """A uint16 ramp whose 8-bit mean (v * 255 / 65535) is `mean8`."""
    hi = 65535.0
    lo = 2 * mean8 / 255 * hi - hi
    return np.linspace(lo, hi, h * w).reshape(h, w).round().astype(np.uint16)


@pytest.fixture
def png16(tmp_path):
    a = _grey16()
    p = tmp_path / "grey16.png"
    Image.fromarray(a).save(p)
    with Image.open(p) as im:
        assert im.mode == "I;16"  # what a 16-bit greyscale PNG opens as
    return p, a


def test_16bit_png_is_not_white_in_every_loader(png16, tmp_path):
    p, a = png16
    true_mean = float((a / 257.0).mean())
    assert abs(true_mean - 144.7) < 0.01
    from ssl_jax.workflows.study.evaluate import _load_rgb
    from ssl_jax.workflows.study.extract import load_image_file
    from ssl_jax.workflows.train_data import decode_images

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "Q1_wd0.png").write_bytes(p.read_bytes())
    got = {
        "load_rgb": load_rgb(p),
        "data.load_image": np.asarray(load_image(p)),
        "extract": np.asarray(load_image_file(p)),
        "evaluate": _load_rgb(tmp_path, "Q1_wd0"),
        "train": decode_images([p], a.shape, 3)[0],
    }
    expect = np.rint(a * (255 / 65535)).astype(np.uint8)
    for where, rgb in got.items():
        assert rgb.dtype == np.uint8 and rgb.shape == (*a.shape, 3), where
        assert abs(rgb.mean() - 144.7) < 0.5, (where, rgb.mean())  # was 255.0
        np.testing.assert_array_equal(rgb, np.repeat(expect[..., None], 3, -1), err_msg=where)


def test_16bit_pil_image_into_preprocess_and_sobel():
    from ssl_jax.metrics.baselines import grey_resized
    from ssl_jax.models.preprocess import _to_rgb_uint8

    a = _grey16()
    im = Image.fromarray(a)
    assert abs(_to_rgb_uint8(im, 0).mean() - 144.7) < 0.5
    assert abs(grey_resized(im, *a.shape).mean() * 255 - 144.7) < 0.5


def _cmyk_rgb(c):
    c = c.astype(np.float64)
    return np.rint((255 - c[..., :3]) * (255 - c[..., 3:]) / 255)


def _ycbcr_rgb(y):
    y = y.astype(np.float64)
    Y, cb, cr = y[..., 0], y[..., 1] - 128, y[..., 2] - 128
    return np.clip(np.stack([Y + 1.402 * cr, Y - 0.344136 * cb - 0.714136 * cr,
                             Y + 1.772 * cb], -1), 0, 255)


def _cases():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    grey, ga = u8[..., 0], u8[..., :2]
    rgb, rgba = u8[..., :3], u8
    bits = grey > 127
    pal = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    idx = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    u16 = rng.integers(0, 65536, (6, 5), dtype=np.uint16)
    f = rng.random((6, 5), dtype=np.float32)
    rep = lambda g: np.repeat(np.asarray(g, np.float64)[..., None], 3, -1)  # noqa: E731

    def p_image(trns):
        im = Image.fromarray(idx, "P")
        im.putpalette(pal.ravel().tolist())
        if trns:
            im.info["transparency"] = int(idx[0, 0])
        return im

    i16b = Image.frombytes("I;16B", (5, 6), u16.astype(">u2").tobytes())
    i16l = Image.frombytes("I;16L", (5, 6), u16.astype("<u2").tobytes())
    return {
        "1": (Image.fromarray(bits), rep(bits * 255.0), 0),
        "L": (Image.fromarray(grey), rep(grey), 0),
        "LA": (Image.fromarray(ga, "LA"), rep(grey), 0),  # alpha dropped
        "P": (p_image(False), pal[idx].astype(np.float64), 0),
        "P+transparency": (p_image(True), pal[idx].astype(np.float64), 0),
        "RGB": (Image.fromarray(rgb), rgb.astype(np.float64), 0),
        "RGBA": (Image.fromarray(rgba, "RGBA"), rgb.astype(np.float64), 0),  # alpha dropped
        "CMYK": (Image.fromarray(u8, "CMYK"), _cmyk_rgb(u8), 1),
        "YCbCr": (Image.fromarray(rgb, "YCbCr"), _ycbcr_rgb(rgb), 1.5),
        "I;16": (Image.fromarray(u16), rep(u16 / 257.0), 0.5),
        "I;16B": (i16b, rep(u16 / 257.0), 0.5),
        "I;16L": (i16l, rep(u16 / 257.0), 0.5),
        "I": (Image.fromarray(u16.astype(np.int32)), rep(u16 / 257.0), 0.5),
        "F": (Image.fromarray(f), rep(f * 255.0), 0.5),
    }


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_every_mode_against_numpy(name):
    im, expect, tol = CASES[name]
    assert im.mode == name.split("+")[0]
    got = to_rgb(im)
    assert got.dtype == np.uint8 and got.shape == (6, 5, 3)
    np.testing.assert_allclose(got.astype(np.float64), expect, atol=tol, rtol=0, err_msg=name)


@pytest.mark.parametrize("name,suffix", [("1", "png"), ("L", "png"), ("LA", "png"),
                                         ("P", "png"), ("P+transparency", "png"),
                                         ("RGBA", "png"), ("I;16", "png"), ("CMYK", "tiff"),
                                         ("I", "tiff"), ("F", "tiff")])
def test_every_mode_from_a_file(tmp_path, name, suffix):
    im, expect, tol = CASES[name]
    p = tmp_path / f"x.{suffix}"
    im.save(p)
    with Image.open(p) as back:
        assert back.mode == name.split("+")[0], back.mode
    got = np.asarray(load_image(p))  # the dataset's loader (what every command reads with)
    np.testing.assert_allclose(got.astype(np.float64), expect, atol=tol, rtol=0)


def test_wide_int_and_float_ranges_are_stretched_with_a_warning_nan_refused():
    wide = Image.fromarray(np.array([[0, 1 << 20], [1 << 19, 1 << 18]], np.int32))
    with pytest.warns(UserWarning, match="stretched"):
        got = to_rgb(wide, "wide.tif")
    np.testing.assert_array_equal(got[..., 0], [[0, 255], [128, 64]])
    with pytest.warns(UserWarning, match="stretched"):
        got = to_rgb(Image.fromarray(np.array([[-1, 3]], np.float32)))
    np.testing.assert_array_equal(got[..., 0], [[0, 255]])
    with pytest.raises(ImageError, match=r"nan\.tif: 1 of 2 pixels"):
        to_rgb(Image.fromarray(np.array([[np.nan, 0.5]], np.float32)), "nan.tif")


# ---- case 7c: decompression bombs, unreadable files ------------------------------------------


def _png_claiming(width, height):
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_decompression_bomb_header_is_a_one_line_user_error(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_claiming(100_000, 100_000))  # 10^10 pixels claimed in 70 bytes
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(UserError) as e:
        load_image(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "10,000,000,000 pixels" in msg
    assert f"{2 * limit:,}" in msg  # PIL's own hard limit, which refused it at open
    assert Image.MAX_IMAGE_PIXELS == limit


def test_pixel_limit_parameter_without_global_state(tmp_path):
    p = tmp_path / "big.png"
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(p)
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError) as e:
        load_rgb(p, max_pixels=5000)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg
    assert "10,000 pixels exceeds the limit of 5,000 pixels" in msg
    assert Image.MAX_IMAGE_PIXELS == limit
    assert load_rgb(p, max_pixels=10_000).shape == (100, 100, 3)
    # the default is PIL's limit read at call time: a header of 1e8 > 89.5M pixels is refused
    # before any decoding (PIL itself only warns below twice its limit)
    q = tmp_path / "claims.png"
    q.write_bytes(_png_claiming(10_000, 10_000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match=f"100,000,000 pixels exceeds the limit of "
                                             f"{limit:,} pixels"):
            load_rgb(q)


@pytest.mark.parametrize("what", ["missing", "not_an_image", "truncated", "directory"])
def test_unreadable_files_are_one_line_errors_naming_the_file(tmp_path, what):
    p = tmp_path / f"{what}.png"
    if what == "not_an_image":
        p.write_text("hello")
    elif what == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(p)
        p.write_bytes(p.read_bytes()[:300])
    elif what == "directory":
        p.mkdir()
    with pytest.raises(UserError) as e:
        load_image(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


# ---- case 10: EXIF orientation ----------------------------------------------------------------


def _stored(h=6, w=10):
    return np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _with_orientation(path, arr, tag, **kw):
    exif = Image.Exif()
    exif[0x0112] = tag
    Image.fromarray(arr).save(path, exif=exif, **kw)
    return path


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_orientation_6_warns_once_stored_frame_by_default_exif_frame_on_request(
        tmp_path, suffix):
    arr = _stored(16, 24)
    p = _with_orientation(tmp_path / f"turned.{suffix}", arr, 6, **(
        {"quality": 95} if suffix == "jpg" else {}))
    with Image.open(p) as im:  # the raw stored array (a JPEG's own decode)
        raw = np.asarray(im.convert("RGB"))
    if suffix == "png":
        np.testing.assert_array_equal(raw, arr)
    from ssl_jax.workflows.study.extract import load_image_file

    with pytest.warns(OrientationWarning) as rec:
        first = np.asarray(load_image(p))
    msgs = [str(w.message) for w in rec if issubclass(w.category, OrientationWarning)]
    assert len(msgs) == 1, msgs
    assert str(p) in msgs[0] and "Orientation 6" in msgs[0] and "rotated 90° clockwise" in msgs[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrientationWarning)  # once per image per process
        second = np.asarray(load_image_file(p))
        third = load_rgb(p)
        turned = np.asarray(load_image(p, orientation="exif"))
    for stored in (first, second, third):
        np.testing.assert_array_equal(stored, raw)
    assert turned.shape == (24, 16, 3)
    np.testing.assert_array_equal(turned, np.rot90(raw, k=-1))  # 90° clockwise, as viewers
    with Image.open(p) as im:
        np.testing.assert_array_equal(turned, np.asarray(ImageOps.exif_transpose(im)))


@pytest.mark.parametrize("tag", range(1, 9))
def test_orient_array_matches_pil_exif_transpose(tmp_path, tag):
    arr = _stored()
    p = _with_orientation(tmp_path / f"o{tag}.png", arr, tag)
    with Image.open(p) as im:
        viewed = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    np.testing.assert_array_equal(orient_array(arr, tag, axes=(0, 1)), viewed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OrientationWarning)
        np.testing.assert_array_equal(np.asarray(load_image(p, orientation="exif")), viewed)
        np.testing.assert_array_equal(np.asarray(load_image(p)), arr)
    assert viewed.shape[:2] == oriented_size(arr.shape[:2], tag)
    np.testing.assert_array_equal(orient_array(orient_array(arr, tag, (0, 1)), INVERSE[tag],
                                               (0, 1)), arr)


@pytest.mark.parametrize("tag", range(1, 9))
def test_boxes_follow_the_orientation_pixel_for_pixel(tag):
    size = (8, 16)  # edges at multiples of 1/8 and 1/16: exact binary fractions, on the grid
    rng = np.random.default_rng(tag)
    lo = rng.integers(0, 6, (20, 2))
    ext = rng.integers(1, 3, (20, 2))
    boxes = np.concatenate([lo, lo + ext], 1) / np.array([16, 8, 16, 8])
    stored = rasterize(boxes, size)
    turned = rasterize(orient_boxes(boxes, tag), oriented_size(size, tag))
    np.testing.assert_array_equal(turned, orient_array(stored, tag))
    np.testing.assert_allclose(orient_boxes(orient_boxes(boxes, tag), INVERSE[tag]), boxes,
                               atol=1e-15)
    # off-grid edges: the floor rule is not mirror-symmetric, so masks of mirrored boxes may
    # move an edge by one pixel (never more); the study therefore transposes the stored-frame
    # masks (orient_stack), which keeps their pixels exactly
    free = np.sort(rng.random((50, 2, 2)), axis=1).transpose(0, 2, 1).reshape(50, 4)
    free = free[:, [0, 2, 1, 3]]
    sq = (16, 16)
    exact = orient_stack(rasterize(free, sq)[None], [tag])[0]
    geo = box_edges(orient_boxes(free, tag), sq)
    ref = np.stack([_edges_of(m) for m in exact])
    assert np.abs(geo - ref).max() <= 1


def _edges_of(mask):
    cols, rows = np.nonzero(mask.any(0))[0], np.nonzero(mask.any(1))[0]
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])


@pytest.mark.parametrize("tag", range(1, 9))
def test_study_box_edges_follow_the_orientation_pixel_for_pixel(tag):
    """evaluate's per-box edges (for metrics.box_iou) give exactly the turned stored-frame
    box masks, off-grid edges included (as the union masks of ground_truth)."""
    from ssl_jax.io.dataset import parse_building_parts
    from ssl_jax.workflows.study.evaluate import box_arrays

    rng = np.random.default_rng(tag)
    xy = rng.random((2, 5, 2)) * 0.6
    wh = 0.05 + rng.random((2, 5, 2)) * 0.35
    ann = parse_building_parts({"annotations": {f"{k}.png": {"bbox_groups": [
        {"group_label": 0, "elements": [
            {"left": xy[k, j, 0], "top": xy[k, j, 1], "width": wh[k, j, 0],
             "height": wh[k, j, 1], "label": j % 3} for j in range(5 - 2 * k)]}]}
        for k in range(2)}})
    ids, size = ["0.png", "1.png"], 20
    edges, valid, labels = box_arrays(ann, ids, size, [tag, 1])
    assert valid.sum(1).tolist() == [5, 3] and labels[1, 3:].tolist() == [-1, -1]
    for i, t in enumerate((tag, 1)):
        a = ann.images[ids[i]]
        np.testing.assert_array_equal(edges_to_masks(edges[i, valid[i]], (size, size)),
                                      orient_array(rasterize(a.boxes, (size, size)), t))
        np.testing.assert_array_equal(labels[i, valid[i]], a.labels)


def test_study_ground_truth_and_config_follow_the_orientation(tmp_path):
    from ssl_jax.io.dataset import parse_building_parts
    from ssl_jax.workflows.study.config import StudyConfig
    from ssl_jax.workflows.study.evaluate import _orientations, ground_truth

    ann = parse_building_parts({"annotations": {
        "a.png": {"bbox_groups": [{"group_label": 0, "elements": [
            {"left": 0.1, "top": 0.2, "width": 0.3, "height": 0.25, "label": 0}]}]},
        "b.png": {"bbox_groups": [{"group_label": 0, "elements": [
            {"left": 0.5, "top": 0.0, "width": 0.5, "height": 0.5, "label": 0}]}]}}})
    (tmp_path / "images").mkdir()
    _with_orientation(tmp_path / "images" / "a.png", _stored(), 6)
    Image.fromarray(_stored()).save(tmp_path / "images" / "b.png")
    ids = ["a.png", "b.png"]
    assert _orientations(tmp_path, ids, "stored", {}) == [1, 1]
    turns = _orientations(tmp_path, ids, "exif", {"orientation": "exif"})
    assert turns == [6, 1]
    m0, t0 = ground_truth(ann, ids, 32)
    m1, t1 = ground_truth(ann, ids, 32, turns)
    np.testing.assert_array_equal(m1[0], np.rot90(m0[0], k=-1))
    np.testing.assert_array_equal(t1[0], np.rot90(t0[0], k=-1))
    np.testing.assert_array_equal(m1[1], m0[1])
    # b's box is on the grid: the turned mask is also the mask of the turned box
    np.testing.assert_array_equal(orient_array(m0[1], 6),
                                  union_mask(orient_boxes(ann.images["b.png"].boxes, 6), (32, 32)))
    # a cache extracted in the other frame is refused by name
    with pytest.raises(UserError, match="orientation = 'stored' but the study config says 'exif'"):
        _orientations(tmp_path, ids, "exif", {})
    assert StudyConfig(orientation="exif").orientation == "exif"
    with pytest.raises(UserError, match="orientation must be 'stored' or 'exif'"):
        StudyConfig(orientation="upright")


def test_extract_reads_the_chosen_frame(tmp_path):
    from ssl_jax.workflows.study.config import StudyConfig
    from ssl_jax.workflows.study.extract import load_image_file
    from ssl_jax.workflows.study.run_extract import cache_settings

    arr = _stored()
    p = _with_orientation(tmp_path / "t.png", arr, 8)
    np.testing.assert_array_equal(np.asarray(load_image_file(p, "exif")), np.rot90(arr, k=1))
    with pytest.warns(OrientationWarning):
        np.testing.assert_array_equal(np.asarray(load_image_file(p)), arr)
    assert "orientation" not in cache_settings(StudyConfig())  # old caches stay valid
    assert cache_settings(StudyConfig(orientation="exif"))["orientation"] == "exif"
