"""Validated parsing of dataset metadata files: every problem is one line naming file and line.

The dataset adapters (:mod:`~masksal.data.imagenet`, :mod:`~masksal.data.cub`,
:mod:`~masksal.data.wsol`) read their text files through these helpers, so the same rules hold
everywhere:

* fields are stripped (``"a.png , 3"`` reads as ``("a.png", "3")``), blank lines are skipped,
  a UTF-8 byte-order mark and Windows line ends are accepted;
* numbers must parse, coordinates must be finite (no ``nan``/``inf``), class indices must be
  non-negative and, when the class count is known, below it;
* an id listed twice, or an id unknown to the image list, is an error (never counted twice,
  never dropped silently);
* paths in metadata must stay inside their root (no absolute paths, no ``..`` that climbs out)
  unless the caller passes ``allow_outside_root=True``.

Every error is a :class:`MetadataError` whose message is one line, ``"<file>:<line>: <what>"``
(or ``"<file>: <what>"`` when no single line is at fault).
"""

from __future__ import annotations

import math
import ntpath
import posixpath
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = [
    "IdRegistry",
    "MetadataError",
    "check_box",
    "inside_root",
    "parse_float",
    "parse_int",
    "read_lines",
    "require_file",
    "split_fields",
]


class MetadataError(ValueError):
    """A missing or malformed metadata file; the message is one line naming file (and line)."""


def _where(path: Path, number: int | None) -> str:
    return f"{path}:{number}" if number else str(path)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a :class:`MetadataError` ``"<path>: missing <what>"``."""
    if not path.is_file():
        raise MetadataError(f"{path}: missing {what}")
    return path


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines of a UTF-8 text file, stripped, with their 1-based numbers."""
    try:
        # utf-8-sig: files saved by Windows editors start with a byte-order mark.
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MetadataError(f"{path}: cannot read ({_one_line(str(exc))})") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line.strip()


def split_fields(path: Path, number: int, line: str, n: int, sep: str | None, form: str) -> list[str]:
    """Split ``line`` into exactly ``n`` stripped fields (``sep=None``: any whitespace).

    Raises:
        MetadataError: another number of fields, or an empty field (``"<file>:<line>: expected
            '<form>', got '<line>'"``).
    """
    parts = [p.strip() for p in (line.split(sep) if sep else line.split())]
    if len(parts) != n or not all(parts):
        raise MetadataError(f"{path}:{number}: expected '{form}', got {line!r}")
    return parts


def parse_int(path: Path, number: int, text: str, what: str = "value", *, low: int | None = None,
              high: int | None = None) -> int:
    """An integer ``low <= v < high`` (bounds optional); ``what`` names it in the error."""
    try:
        value = int(text)
    except ValueError:
        raise MetadataError(f"{path}:{number}: {text!r} is not a valid int") from None
    if low is not None and value < low:
        raise MetadataError(f"{path}:{number}: {what} {value} is below {low}")
    if high is not None and value >= high:
        raise MetadataError(f"{path}:{number}: {what} {value} is out of range (expected {low or 0}..{high - 1})")
    return value


def parse_float(path: Path | str, number: int | None, text: str) -> float:
    """A finite float (``nan`` and ``inf`` are refused: they would surface much later, nameless)."""
    try:
        value = float(text)
    except ValueError:
        raise MetadataError(f"{_where(Path(path), number)}: {text!r} is not a valid float") from None
    if not math.isfinite(value):
        raise MetadataError(f"{_where(Path(path), number)}: {text!r} is not a finite number")
    return value


def check_box(path: Path, number: int | None, box: Sequence[float]) -> None:
    """Refuse a box with ``x1 < x0`` or ``y1 < y0`` (inclusive coordinates, so equal is one pixel)."""
    if box[2] < box[0] or box[3] < box[1]:
        raise MetadataError(f"{_where(path, number)}: box {tuple(box)} has x1 < x0 or y1 < y0")


def inside_root(root: Path, relative: str, path: Path, number: int, what: str = "path", *,
                allow_outside_root: bool = False) -> Path:
    """``root / relative``, refusing a path that leaves ``root``.

    The check is on the text of the path: an absolute path, or one whose ``..`` parts climb above
    ``root``, is refused. Symbolic links inside ``root`` are followed as usual (data folders are
    often links to another disk), so the check is about what the metadata says, not where the
    links point.

    Args:
        root: folder the metadata's paths are relative to.
        relative: the path as written in the metadata file.
        path: the metadata file (for the message).
        number: its line (for the message).
        what: what the path is (``"image id"``, ``"mask path"``...).
        allow_outside_root: accept absolute paths and ``..`` (an explicit opt-in).

    Raises:
        MetadataError: ``"<file>:<line>: <what> '<relative>' leaves <root> (...)"``.
    """
    if not allow_outside_root:
        norm = posixpath.normpath(relative.replace("\\", "/"))
        if posixpath.isabs(norm) or ntpath.isabs(relative) or norm == ".." or norm.startswith("../"):
            raise MetadataError(
                f"{path}:{number}: {what} {relative!r} leaves {root} (absolute or '..'; "
                "pass allow_outside_root=True to allow it)"
            )
    return root / relative


class IdRegistry:
    """The ids of one metadata file: refuses an id seen twice, or one missing from a reference list.

    Args:
        path: the metadata file (for messages).
        known: ids that may appear (e.g. those of the image list); ``None`` accepts any.
        reference: the name of the file that defines ``known``, for messages.
    """

    def __init__(self, path: Path, known: set[str] | None = None, reference: str = "the image list") -> None:
        self.path = path
        self.known = known
        self.reference = reference
        self.first_line: dict[str, int] = {}

    def add(self, image_id: str, number: int, *, repeats: bool = False) -> None:
        """Record ``image_id`` read on line ``number``; ``repeats=True`` allows several lines per id."""
        if self.known is not None and image_id not in self.known:
            raise MetadataError(f"{self.path}:{number}: image id {image_id!r} is not in {self.reference}")
        if image_id in self.first_line and not repeats:
            raise MetadataError(
                f"{self.path}:{number}: image id {image_id!r} listed twice (first on line {self.first_line[image_id]})"
            )
        self.first_line.setdefault(image_id, number)

    def require_all(self, ids: Sequence[str]) -> None:
        """Every id of ``ids`` must have been added."""
        missing = [i for i in ids if i not in self.first_line]
        if missing:
            raise MetadataError(f"{self.path}: no line for image id {missing[0]} ({len(missing)} missing)")
