"""Property tests of the metadata parsers (masksal.data.metadata, and the WSOL/CUB readers on it).

Generated metadata with arbitrary spacing reads back exactly; one injected fault (a non-finite
coordinate, a negative label, a repeated or unknown id, a path leaving the root) is always a
one-line MetadataError naming the file and the faulty line. No image is read: building a dataset
reads only its metadata.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from masksal.data import CUBDataset, MetadataError, WSOLDataset
from masksal.data.metadata import inside_root, parse_float, split_fields

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

pad = st.sampled_from(["", " ", "  ", "\t", " \t "])
name = st.from_regex(r"[a-z0-9_][a-z0-9_.-]{0,6}", fullmatch=True).filter(lambda s: s not in (".", ".."))
image_id = st.builds(lambda parts, ext: "/".join(parts) + ext, st.lists(name, min_size=1, max_size=3),
                     st.sampled_from([".png", ".jpg", ".JPEG"]))
coordinate = st.floats(min_value=-50, max_value=5000, allow_nan=False, allow_infinity=False)


@st.composite
def box(draw: st.DrawFn) -> tuple[float, float, float, float]:
    x0, y0 = draw(coordinate), draw(coordinate)
    w = draw(st.floats(min_value=0, max_value=500))
    h = draw(st.floats(min_value=0, max_value=500))
    return (x0, y0, x0 + w, y0 + h)


@dataclass
class Sample:
    id: str
    label: int
    boxes: list[tuple[float, float, float, float]]


samples = st.lists(
    st.builds(Sample, image_id, st.integers(0, 9), st.lists(box(), max_size=3)),
    min_size=1, max_size=6, unique_by=lambda s: s.id,
)


def _line(fields: list[str], pads: list[str]) -> str:
    """Fields joined by commas, each with the spacing drawn for it on both sides."""
    return ",".join(f"{pads[(2 * i) % len(pads)]}{f}{pads[(2 * i + 1) % len(pads)]}" for i, f in enumerate(fields))


@contextmanager
def _folder() -> Iterator[Path]:
    # A fresh folder per example (pytest's tmp_path is shared by all examples of one test).
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _write_wsol(meta: Path, data: list[Sample], pads: list[str]) -> dict[str, list[str]]:
    files = {
        "image_ids.txt": [f"{pads[0]}{s.id}{pads[-1]}" for s in data],
        "class_labels.txt": [_line([s.id, str(s.label)], pads) for s in data],
        "localization.txt": [_line([s.id, *map(repr, b)], pads) for s in data for b in s.boxes],
    }
    meta.mkdir(parents=True, exist_ok=True)
    for file, lines in files.items():
        (meta / file).write_text("".join(line + "\n" for line in lines))
    return files


@SETTINGS
@given(data=samples, pads=st.lists(pad, min_size=1, max_size=5))
def test_wsol_metadata_reads_back_exactly_whatever_the_spacing(data: list[Sample], pads: list[str]) -> None:
    with _folder() as root:
        _write_wsol(root / "meta", data, pads)
        ds = WSOLDataset(root / "meta", root / "images", num_classes=10)
    assert ds.ids == [s.id for s in data]
    assert [r.label for r in ds.records] == [s.label for s in data]
    assert [[tuple(b) for b in r.boxes.tolist()] for r in ds.records] == [s.boxes for s in data]
    assert [r.path for r in ds.records] == [root / "images" / s.id for s in data]


FAULTS = ("nan", "inf", "negative label", "label too big", "repeated id", "unknown id", "parent path", "absolute")


@SETTINGS
@given(data=samples, pads=st.lists(pad, min_size=1, max_size=3), fault=st.sampled_from(FAULTS),
       where=st.integers(0, 100), sign=st.sampled_from(["", "-", "+"]))
def test_one_injected_fault_is_one_line_naming_file_and_line(
        data: list[Sample], pads: list[str], fault: str, where: int, sign: str) -> None:
    k = where % len(data)
    with _folder() as root:
        meta = root / "meta"
        files = _write_wsol(meta, data, pads)
        if fault in ("nan", "inf"):
            file, line = "localization.txt", len(files["localization.txt"]) + 1
            files[file].append(_line([data[k].id, "1", f"{sign}{fault}", "2", "3"], pads))
        elif fault in ("negative label", "label too big"):
            file, line = "class_labels.txt", k + 1
            files[file][k] = _line([data[k].id, "-1" if fault == "negative label" else "10"], pads)
        elif fault in ("repeated id", "unknown id"):
            file, line = "class_labels.txt", len(data) + 1
            files[file].append(_line([data[k].id if fault == "repeated id" else "not/listed.png", "0"], pads))
        else:
            file, line = "image_ids.txt", k + 1
            files[file].insert(k, "../outside.png" if fault == "parent path" else "/elsewhere/x.png")
        for f, lines in files.items():
            (meta / f).write_text("".join(text + "\n" for text in lines))
        with pytest.raises(MetadataError) as info:
            WSOLDataset(meta, root / "images", num_classes=10)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{meta / file}:{line}: "), (fault, message)


@SETTINGS
@given(parts=st.lists(st.sampled_from(["a", "b", "..", ".", "c.png"]), min_size=1, max_size=6),
       absolute=st.booleans())
def test_inside_root_agrees_with_the_filesystem(parts: list[str], absolute: bool) -> None:
    rel = ("/" if absolute else "") + "/".join(parts)
    with _folder() as tmp:
        root = (tmp / "root").resolve()
        root.mkdir()
        # Oracle: where the operating system puts the path (no links here, so this is exact).
        inside = (root / rel).resolve().is_relative_to(root)
        try:
            got = inside_root(root, rel, Path("ids.txt"), 7)
        except MetadataError as exc:
            assert not inside, rel
            assert str(exc).startswith("ids.txt:7: path ") and "\n" not in str(exc)
        else:
            assert inside, rel
            assert got == root / rel
        assert inside_root(root, rel, Path("ids.txt"), 7, allow_outside_root=True) == root / rel


@SETTINGS
@given(fields=st.lists(st.from_regex(r"[^,\s]{1,6}", fullmatch=True), min_size=1, max_size=5),
       pads=st.lists(pad, min_size=1, max_size=4))
def test_split_fields_strips_every_field(fields: list[str], pads: list[str]) -> None:
    line = _line(fields, pads).strip()
    assert split_fields(Path("f.txt"), 1, line, len(fields), ",", "form") == fields


@SETTINGS
@given(value=st.one_of(st.floats(), st.sampled_from([math.nan, math.inf, -math.inf])), spacing=pad)
def test_parse_float_accepts_exactly_the_finite_numbers(value: float, spacing: str) -> None:
    text = f"{spacing}{value!r}{spacing}"
    if math.isfinite(value):
        assert parse_float(Path("f.txt"), 3, text.strip()) == value
    else:
        with pytest.raises(MetadataError) as info:
            parse_float(Path("f.txt"), 3, text.strip())
        assert str(info.value).startswith("f.txt:3: ") and "not a finite number" in str(info.value)


@SETTINGS
@given(data=samples, spaces=st.sampled_from([" ", "  ", "\t", " \t"]))
def test_cub_metadata_reads_back_exactly_whatever_the_spacing(data: list[Sample], spaces: str) -> None:
    with _folder() as root:
        rows = [(i + 1, s, s.boxes[0] if s.boxes else (0.0, 0.0, 0.0, 0.0)) for i, s in enumerate(data)]

        def table(lines: list[str]) -> str:
            return "".join(f"{spaces}{spaces.join(line.split(' '))}{spaces}\n" for line in lines)

        (root / "images.txt").write_text(table([f"{k} {s.id}" for k, s, _ in rows]))
        (root / "image_class_labels.txt").write_text(table([f"{k} {s.label + 1}" for k, s, _ in rows]))
        (root / "bounding_boxes.txt").write_text(
            table([f"{k} {b[0]!r} {b[1]!r} {b[2] - b[0]!r} {b[3] - b[1]!r}" for k, _, b in rows]))
        ds = CUBDataset(root, "all")
    assert ds.ids == [s.id for s in data] and [r.label for r in ds.records] == [s.label for s in data]
    for r, (_, _, b) in zip(ds.records, rows, strict=True):
        x, y = b[0], b[1]
        assert r.boxes.tolist() == [[x, y, x + (b[2] - x), y + (b[3] - y)]]
