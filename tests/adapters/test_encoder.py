"""The encoder: real open_clip loading from a checkpoint, model ids, normalised output, radiograph decoding."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from raiox.adapters.encoder import Encoder, EncoderUnavailable
from raiox.adapters.imaging import ImageError, ImageTooLarge, UnsupportedImage, inspect_image, load_radiograph
from support import make_xray


@pytest.fixture(scope="module")
def tiny_encoder(tiny_checkpoint: Path) -> Encoder:
    """The open_clip adapter itself (conftest's tiny_encoder is the identifier that wraps it)."""
    return Encoder.load("raiox-tiny-vit", str(tiny_checkpoint), device="cpu", batch_size=4)


def test_embeddings_are_unit_length_512d_and_deterministic(tiny_encoder: Encoder) -> None:
    images = [make_xray(seed) for seed in range(6)]
    result = tiny_encoder.encode(images)
    assert result.errors == {}
    vectors = np.stack([result.embeddings[i] for i in range(6)])
    assert vectors.shape == (6, 512) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Batching (4 per pass here) must not change an image's embedding.
    assert np.allclose(tiny_encoder.encode_one(images[5]), vectors[5], atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)


def test_model_id_names_the_model_and_the_weights(tiny_checkpoint: Path, tiny_encoder: Encoder,
                                                   tmp_path: Path) -> None:
    again = Encoder.load("raiox-tiny-vit", str(tiny_checkpoint), device="cpu")
    assert again.model_id == tiny_encoder.model_id
    assert tiny_encoder.model_id.startswith("raiox-tiny-vit@")
    state = torch.load(tiny_checkpoint)
    first = next(iter(state))
    state[first] = state[first] + 0.01
    torch.save(state, tmp_path / "other.pt")
    other = Encoder.load("raiox-tiny-vit", str(tmp_path / "other.pt"), device="cpu")
    assert other.model_id != tiny_encoder.model_id


def test_missing_weights_fail_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(EncoderUnavailable, match="RAIOX_CLIP_PRETRAINED"):
        Encoder.load("raiox-tiny-vit", str(tmp_path / "missing.pt"), device="cpu")


def test_wrong_checkpoint_fails_rather_than_using_random_weights(tmp_path: Path) -> None:
    torch.save({"unrelated": torch.zeros(3)}, tmp_path / "wrong.pt")
    with pytest.raises(EncoderUnavailable, match="RAIOX_CLIP_PRETRAINED"):
        Encoder.load("raiox-tiny-vit", str(tmp_path / "wrong.pt"), device="cpu")


def test_unknown_model_names_the_setting() -> None:
    with pytest.raises(EncoderUnavailable, match="RAIOX_CLIP_MODEL"):
        Encoder.load("no-such-model", "x", device="cpu")


def test_bad_images_are_reported_per_position(tiny_encoder: Encoder) -> None:
    good = make_xray(1, fmt="JPEG")
    truncated = good[: len(good) // 2]
    result = tiny_encoder.encode([good, b"GIF89a not accepted", truncated, b""])
    assert set(result.embeddings) == {0}
    assert isinstance(result.errors[1], UnsupportedImage)
    assert isinstance(result.errors[2], ImageError) and "decode" in str(result.errors[2])
    assert isinstance(result.errors[3], UnsupportedImage)
    with pytest.raises(ImageError):
        tiny_encoder.encode_one(truncated)


def test_sixteen_bit_film_is_windowed_not_clipped() -> None:
    data = make_xray(3, mode="I;16")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    pixels = np.asarray(load_radiograph(data).convert("L"))
    assert pixels.max() >= 250 and pixels.min() <= 5  # the full range is used
    assert (pixels > 128).mean() < 0.5  # and the film did not turn white (or black)


def test_exif_orientation_is_applied() -> None:
    image = Image.new("L", (40, 20), 0)
    image.paste(255, (0, 0, 10, 20))  # bright band on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90° clockwise turn
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif.tobytes(), quality=95)
    upright = load_radiograph(out.getvalue()).convert("L")
    assert upright.size == (20, 40)
    assert np.asarray(upright)[:10].mean() > 200  # the band is now on top


def test_tiff_and_cmyk_jpeg_decode() -> None:
    for fmt, mode in (("TIFF", "L"), ("JPEG", "CMYK"), ("PNG", "RGBA")):
        assert load_radiograph(make_xray(4, fmt=fmt, mode=mode)).mode == "RGB"


def test_a_grey_decode_has_the_rgb_decodes_levels_in_every_mode() -> None:
    # The shape identifier decodes straight to grey; its films must read as they did through RGB.
    for fmt, mode in (("PNG", "L"), ("PNG", "I;16"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("JPEG", "CMYK"),
                      ("TIFF", "L")):
        data = make_xray(4, fmt=fmt, mode=mode)
        grey = load_radiograph(data, grey=True)
        assert grey.mode == "L", (fmt, mode)
        assert np.array_equal(np.asarray(grey), np.asarray(load_radiograph(data).convert("L"))), (fmt, mode)


def test_pixel_limit_guards_against_decompression_bombs() -> None:
    big = make_xray(5, size=(400, 400))
    assert inspect_image(big, max_pixels=400 * 400).width == 400
    with pytest.raises(ImageTooLarge):
        inspect_image(big, max_pixels=400 * 400 - 1)
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")  # tiny file, 400 megapixels
    with pytest.raises(ImageTooLarge):
        load_radiograph(bomb.getvalue())


def test_type_is_sniffed_from_bytes() -> None:
    with pytest.raises(UnsupportedImage):
        inspect_image(b"<svg xmlns='http://www.w3.org/2000/svg'></svg>")
    assert inspect_image(make_xray(6, fmt="JPEG")).kind.extension == ".jpg"


def test_preparation_matches_open_clips_own_preprocessing(tiny_encoder: Encoder) -> None:
    """prepare() + normalising on the device must feed the model what open_clip's transform would."""
    data = make_xray(8, size=(300, 180))
    ours = torch.from_numpy(tiny_encoder.prepare(data))[None].permute(0, 3, 1, 2).float()
    ours = (ours - tiny_encoder._mean) / tiny_encoder._std
    theirs = tiny_encoder.preprocess(load_radiograph(data, draft_size=tiny_encoder.image_size))[None]
    assert ours.shape == theirs.shape == (1, 3, 64, 64)
    assert torch.allclose(ours, theirs, atol=1e-5)
    direct = tiny_encoder.encode_tensors(torch.from_numpy(tiny_encoder.prepare(data)[None]))[0]
    assert np.allclose(tiny_encoder.encode_one(data), direct, atol=1e-6)


def test_without_settings_the_shipped_shape_encoder_loads_from_its_sidecar() -> None:
    """RAIOX_CLIP_MODEL and RAIOX_CLIP_PRETRAINED unset: the shipped shape encoder, its architecture from the
    sidecar; works offline."""
    from raiox.settings import Settings
    from raiox.shape.identifier import SHIPPED_SHAPE_ENCODER, ShapeIdentifier
    from raiox.shape.network import is_shape_checkpoint

    settings = Settings.given(raiox_device="cpu")
    assert (settings.raiox_clip_model, settings.raiox_clip_pretrained) == ("", "shipped")
    assert is_shape_checkpoint(SHIPPED_SHAPE_ENCODER)
    identifier = ShapeIdentifier.from_settings(settings)
    assert identifier.model.kind == "shape" and identifier.model_id.startswith("raiox-shape-s@")
    assert "random" not in identifier.model_id


def test_a_sidecar_names_the_architecture_and_wins_over_the_setting(tiny_checkpoint: Path, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    import json
    import shutil

    from raiox.adapters.encoder import checkpoint_sidecar, resolve_weights

    checkpoint = tmp_path / "trained.pt"
    shutil.copy(tiny_checkpoint, checkpoint)
    checkpoint_sidecar(checkpoint).write_text(json.dumps({"model": "raiox-tiny-vit"}))
    assert resolve_weights("", str(checkpoint)) == ("raiox-tiny-vit", str(checkpoint))
    assert resolve_weights("ViT-B-32", str(checkpoint)) == ("raiox-tiny-vit", str(checkpoint))
    assert "RAIOX_CLIP_MODEL=ViT-B-32 ignored" in caplog.text
    # Without a sidecar (an open_clip tag, a bare checkpoint) RAIOX_CLIP_MODEL names the architecture.
    assert resolve_weights("raiox-tiny-vit", str(tiny_checkpoint)) == ("raiox-tiny-vit", str(tiny_checkpoint))
    assert resolve_weights("ViT-B-32", "laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    with pytest.raises(EncoderUnavailable, match="set RAIOX_CLIP_MODEL too"):
        resolve_weights("", "laion2b_s34b_b79k")
    checkpoint_sidecar(checkpoint).write_text("{not json")
    with pytest.raises(EncoderUnavailable, match="cannot read"):
        resolve_weights("", str(checkpoint))
