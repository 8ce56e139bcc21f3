"""Images: pixel equality with the original path, RGB conversion of every mode, bad image files."""

from __future__ import annotations

import ast
import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import yivl.data.images as images_module
from yivl.data.images import ImageError, ImageProcessor, expand_to_square, load_image, to_rgb
from yivl.errors import YivlError

ROOT = Path(__file__).resolve().parents[2]
BACKGROUND = (122, 116, 104)
SIZES = [(640, 480), (300, 901), (97, 53), (451, 449), (512, 512)]


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def reference_expand2square(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """The release's ``expand2square`` (VL/llava/mm_utils.py), written out independently."""
    width, height = img.size
    if width == height:
        return img
    if width > height:
        result = Image.new(img.mode, (width, width), background)
        result.paste(img, (0, (width - height) // 2))
        return result
    result = Image.new(img.mode, (height, height), background)
    result.paste(img, ((height - width) // 2, 0))
    return result


def reference_processor(side: int):
    """transformers' PIL-backend CLIPImageProcessor configured like Yi-VL's vit folder."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        do_center_crop=True,
        resample=Image.Resampling.BICUBIC,
    )


def reference_pixels(img: Image.Image, side: int, pad: bool = True) -> torch.Tensor:
    if pad:
        img = reference_expand2square(img, BACKGROUND)
    return reference_processor(side)(images=[img], return_tensors="pt")["pixel_values"][0]


@pytest.mark.parametrize("side", [448, 224, 112])
@pytest.mark.parametrize("size", SIZES)
def test_pixels_equal_original_path(side: int, size: tuple[int, int]) -> None:
    img = random_image(*size, seed=side)
    ours = ImageProcessor(side)(img)
    assert ours.shape == (3, side, side) and ours.dtype == torch.float32
    assert torch.allclose(ours, reference_pixels(img, side), atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", SIZES[:3])
def test_pixels_without_padding_equal_center_crop_path(size: tuple[int, int]) -> None:
    img = random_image(*size, seed=1)
    ours = ImageProcessor(224)(img, pad=False)
    assert torch.allclose(ours, reference_pixels(img, 224, pad=False), atol=1e-5, rtol=0)


def test_pipeline_does_not_import_torchvision_or_transformers() -> None:
    tree = ast.parse(Path(images_module.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"torchvision", "transformers"}


def test_pixels_are_the_same_when_torchvision_cannot_load(tmp_path: Path) -> None:
    img = random_image(300, 200, seed=3)
    img.save(tmp_path / "in.png")
    script = (
        "import sys; sys.modules['torchvision'] = None\n"
        "import torch\n"
        "from yivl.data.images import ImageProcessor, load_image\n"
        f"pixels = ImageProcessor(112)(load_image({str(tmp_path / 'in.png')!r}))\n"
        "assert 'transformers' not in sys.modules\n"
        f"torch.save(pixels, {str(tmp_path / 'out.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True)
    isolated = torch.load(tmp_path / "out.pt", weights_only=True)
    assert torch.allclose(isolated, reference_pixels(img, 112), atol=1e-5, rtol=0)


def test_background_is_the_truncated_processor_mean() -> None:
    assert ImageProcessor().background == BACKGROUND


@pytest.mark.parametrize("size", [(6, 2), (2, 6), (3, 3), (5, 2)])
def test_expand_to_square_matches_original(size: tuple[int, int]) -> None:
    img = random_image(*size, seed=4)
    ours = np.asarray(expand_to_square(img, BACKGROUND))
    assert np.array_equal(ours, np.asarray(reference_expand2square(img, BACKGROUND)))
    assert ours.shape[:2] == (max(size), max(size))


def test_expand_to_square_accepts_grayscale() -> None:
    # The original crashed here: an 'L' canvas cannot take an RGB background tuple.
    out = expand_to_square(Image.new("L", (4, 2), 50), BACKGROUND)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == BACKGROUND and out.getpixel((0, 1)) == (50, 50, 50)


def _with_info(img: Image.Image, **info: object) -> Image.Image:
    img.info.update(info)
    return img


def _palette_image() -> Image.Image:
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 10, 20, 30] + [0, 0, 0] * 254)
    return img


MODES = {
    "L": (lambda: Image.new("L", (4, 4), 200), (200, 200, 200)),
    "LA transparent": (lambda: Image.new("LA", (4, 4), (0, 0)), (255, 255, 255)),
    "LA opaque": (lambda: Image.new("LA", (4, 4), (30, 255)), (30, 30, 30)),
    "P": (_palette_image, (10, 20, 30)),
    "P transparent": (lambda: _with_info(_palette_image(), transparency=1), (255, 255, 255)),
    "RGBA transparent": (lambda: Image.new("RGBA", (4, 4), (255, 0, 0, 0)), (255, 255, 255)),
    "RGBA half": (lambda: Image.new("RGBA", (4, 4), (0, 0, 0, 128)), (127, 127, 127)),
    "RGBA opaque": (lambda: Image.new("RGBA", (4, 4), (255, 0, 0, 255)), (255, 0, 0)),
    "CMYK": (lambda: Image.new("CMYK", (4, 4), (0, 255, 255, 0)), (255, 0, 0)),
    "I;16 white": (lambda: Image.new("I;16", (4, 4), 65535), (255, 255, 255)),
    "I;16 black": (lambda: Image.new("I;16", (4, 4), 0), (0, 0, 0)),
    "I;16 mid": (lambda: Image.new("I;16", (4, 4), 257 * 100), (100, 100, 100)),
    "I;16B white": (lambda: Image.new("I;16B", (4, 4), 65535), (255, 255, 255)),
    "I white": (lambda: Image.new("I", (4, 4), 65535), (255, 255, 255)),
    "F unit": (lambda: Image.new("F", (4, 4), 1.0), (255, 255, 255)),
    "F 8-bit": (lambda: Image.new("F", (4, 4), 200.0), (200, 200, 200)),
    "1": (lambda: Image.new("1", (4, 4), 1), (255, 255, 255)),
    "RGB": (lambda: Image.new("RGB", (4, 4), (1, 2, 3)), (1, 2, 3)),
}


@pytest.mark.parametrize("name", MODES)
def test_to_rgb(name: str) -> None:
    make, expected = MODES[name]
    out = to_rgb(make())
    assert out.mode == "RGB" and out.size == (4, 4)
    assert set(out.getdata()) == {expected}


def test_to_rgb_scales_wide_integer_range_instead_of_clipping() -> None:
    img = Image.fromarray(np.array([[-100, 0], [100, 1000]], dtype=np.int32))
    values = np.asarray(to_rgb(img))[..., 0]
    assert values[0, 0] == 0 and values[1, 1] == 255 and 0 < values[0, 1] < values[1, 0] < 255


def test_processor_accepts_every_mode() -> None:
    processor = ImageProcessor(28)
    for make, _ in MODES.values():
        assert processor(make()).shape == (3, 28, 28)


def _encoded(fmt: str, size: tuple[int, int] = (64, 48), **save: object) -> bytes:
    buffer = io.BytesIO()
    random_image(*size).save(buffer, fmt, **save)
    return buffer.getvalue()


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's calling card)."""
    data = bytearray(_encoded("PNG", (4, 4)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


BAD_FILES = {
    "empty.png": (b"", "image file is empty"),
    "notes.jpg": (b"these are words, not pixels\n", "not an image"),
    "cut.jpg": (_half(_encoded("JPEG")), "truncated or corrupt"),
    "cut.png": (_half(_encoded("PNG")), "truncated or corrupt"),
    "cut.gif": (_half(_encoded("GIF")), "truncated or corrupt"),
    "bomb.png": (_png_header_claiming(9000, 8000), "72000000 pixels, over the limit"),
    "huge.png": (_png_header_claiming(20000, 20000), "image too large"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_image_files_name_the_file(tmp_path: Path, name: str) -> None:
    data, message = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageError, match=message) as err:
        load_image(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, YivlError)


def test_missing_and_directory_paths(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=f"image not found: {tmp_path / 'nope.png'}"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)


def test_max_pixels_is_checked_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    path.write_bytes(_encoded("PNG", (64, 48)))
    assert load_image(path).size == (64, 48)
    with pytest.raises(ImageError, match="3072 pixels, over the limit of 1000"):
        load_image(path, max_pixels=1000)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_encoded("JPEG", (40, 20), exif=exif.tobytes()))
    assert load_image(path).size == (20, 40)


def test_load_image_from_bytes_and_transparency() -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (8, 6), (0, 0, 255, 0)).save(buffer, "PNG")
    img = load_image(buffer.getvalue())
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 255, 255)


RELEASE_STYLE_CONFIG = {
    "crop_size": 448,
    "do_center_crop": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 448,
}


def test_from_pretrained_reads_release_style_ints(tmp_path: Path) -> None:
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(RELEASE_STYLE_CONFIG))
    processor = ImageProcessor.from_pretrained(tmp_path)
    assert (processor.size, processor.resize_size, processor.background) == (448, 448, BACKGROUND)


def test_save_then_load_round_trip_and_transformers_reads_it(tmp_path: Path) -> None:
    ImageProcessor(112).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert config["crop_size"] == {"height": 112, "width": 112} and config["size"] == {"shortest_edge": 112}
    processor = ImageProcessor.from_pretrained(tmp_path)
    assert (processor.size, processor.image_mean, processor.resample) == (112, images_module.CLIP_MEAN, 3)
    from transformers import CLIPImageProcessorPil

    theirs = CLIPImageProcessorPil.from_pretrained(tmp_path)
    img = reference_expand2square(random_image(90, 60), BACKGROUND)
    expected = theirs(images=[img], return_tensors="pt")["pixel_values"][0]
    assert torch.allclose(processor(img), expected, atol=1e-5, rtol=0)


BAD_CONFIGS = {
    "missing": (None, "image processor config not found"),
    "not json": ("{oops", "not valid JSON"),
    "non-square crop": ({"crop_size": {"height": 448, "width": 224}, "size": 448}, "crop_size must be"),
    "no resize": ({"do_resize": False, "size": 448, "crop_size": 448}, "do_resize is false"),
    "bad mean": ({"size": 448, "crop_size": 448, "image_mean": [0.5]}, "image_mean must list 3"),
}


@pytest.mark.parametrize("name", BAD_CONFIGS)
def test_bad_preprocessor_configs(tmp_path: Path, name: str) -> None:
    content, message = BAD_CONFIGS[name]
    if content is not None:
        text = content if isinstance(content, str) else json.dumps(content)
        (tmp_path / "preprocessor_config.json").write_text(text)
    with pytest.raises(YivlError, match=message) as err:
        ImageProcessor.from_pretrained(tmp_path)
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)
