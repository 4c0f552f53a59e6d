"""Bad data is converted correctly, skipped and counted, or refused with one line naming the file; never a crash."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cnnjobs.data.decode import BadImage, load_pixels
from cnnjobs.data.shards import prepare
from cnnjobs.data.sources import ImageFile
from cnnjobs.errors import JobError
from tests.data.helpers import class_folders, image, spec

SHAPE = (24, 20, 3)


def pixels(path, shape=SHAPE) -> np.ndarray:
    return load_pixels(ImageFile(str(path)), shape)


def test_other_modes_convert_to_the_same_rgb(tmp_path):
    reference = pixels(image(tmp_path / "rgb.png"))
    with Image.open(tmp_path / "rgb.png") as rgb:
        rgb.quantize(4).save(tmp_path / "palette.png")  # mode P, exact colours
    assert np.array_equal(pixels(tmp_path / "palette.png"), reference)
    for mode in ("RGBA", "CMYK"):
        path = image(tmp_path / f"x.{'jpg' if mode == 'CMYK' else 'png'}", mode=mode)
        assert np.abs(pixels(path).astype(int) - reference).mean() <= 3, mode  # JPEG blurs the corner's edge
    gray = pixels(image(tmp_path / "l.png", mode="L"))
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])


def test_transparency_is_composited_on_white(tmp_path):
    Image.new("RGBA", (20, 24), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert (pixels(tmp_path / "clear.png") == 255).all()


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.full((24, 20), 32768, np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert abs(int(pixels(tmp_path / "deep.png", (24, 20, 1)).mean()) - 128) <= 1


def test_exif_rotation_is_applied(tmp_path):
    path = image(tmp_path / "phone.jpg", size=(40, 20))  # landscape, dark corner top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    with Image.open(path) as opened:
        opened.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    upright = pixels(tmp_path / "rotated.jpg", (40, 20, 3))  # displayed portrait: 20 wide, 40 high
    assert upright[:5, -5:].mean() < 40 and upright[:5, :5].mean() > 60  # the dark corner moved to the top right


@pytest.mark.parametrize("content, reason", [
    (b"", "not an image"),
    (b"hello, this is not a picture", "not an image"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not an image"),
])
def test_unreadable_files_say_why(tmp_path, content, reason):
    (tmp_path / "bad.jpg").write_bytes(content)
    with pytest.raises(BadImage, match=reason):
        pixels(tmp_path / "bad.jpg")


def test_truncated_image(tmp_path):
    path = image(tmp_path / "t.jpg", size=(200, 200))
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(BadImage, match="corrupt or truncated"):
        pixels(path)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size (a decompression bomb needs no more to be refused)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + \
        chunk(b"IEND", b"")


def test_decompression_bomb_is_refused(tmp_path):
    for side in (12_000, 40_000):  # above Pillow's warning limit, and above its error limit
        (tmp_path / "bomb.png").write_bytes(_png_claiming(side, side))
        with pytest.raises(BadImage, match="decompression bomb"):
            pixels(tmp_path / "bomb.png")


def _mixed_folder(tmp_path):
    root = class_folders(tmp_path / "d", per_class=8)
    (root / "cat" / "empty.jpg").write_bytes(b"")
    (root / "dog" / "notes.jpg").write_text("not an image")
    image(root / "dog" / "gray.png", mode="L")
    image(root / "dog" / "rgba.png", mode="RGBA")
    (root / "bird").mkdir()  # a class with no images
    return root


def test_prepare_skips_counts_and_lists_bad_files(tmp_path):
    root = _mixed_folder(tmp_path)
    manifest, _ = prepare(spec({"type": "image_folder", "path": str(root)}, tmp_path / "c"))
    assert manifest.tasks == {"label": ["cat", "dog"]}  # the empty class is dropped, and listed
    skipped = {ref.rsplit("/", 1)[-1]: reason for ref, reason in manifest.skipped}
    assert skipped == {"empty.jpg": "not an image or an unsupported format",
                       "notes.jpg": "not an image or an unsupported format", "bird": "class folder has no images"}
    total = sum(manifest.num_rows(split) for split in ("train", "val", "test"))
    assert total == 8 + 10  # 8 cats, 8 dogs plus the grayscale and RGBA ones, converted
    rows = sum(pq.read_metadata(p).num_rows for s in ("train", "val", "test") for p in manifest.paths(s))
    assert rows == total


def test_on_error_fail_refuses_with_the_file_named(tmp_path):
    root = _mixed_folder(tmp_path)
    (root / "bird").rmdir()
    with pytest.raises(JobError, match=r"/d/(cat/empty|dog/notes)\.jpg: not an image.*\(data.on_error: fail\)$"):
        prepare(spec({"type": "image_folder", "path": str(root)}, tmp_path / "c", on_error="fail"))


def test_a_split_without_images_is_refused(tmp_path):
    class_folders(tmp_path / "d" / "train")
    (tmp_path / "d" / "val" / "cat").mkdir(parents=True)
    with pytest.raises(JobError, match="the val split folder .*/d/val has no images"):
        prepare(spec({"type": "image_folder", "path": str(tmp_path / "d")}, tmp_path / "c"))
    for path in (tmp_path / "d" / "train").rglob("*.png"):
        path.write_bytes(b"broken")
    image(tmp_path / "d" / "val" / "cat" / "one.png")
    with pytest.raises(JobError, match="the train split has no usable images"):
        prepare(spec({"type": "image_folder", "path": str(tmp_path / "d")}, tmp_path / "c"))
