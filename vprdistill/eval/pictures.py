"""Pictures of predictions: a query followed by its top matches, framed green when right and red when wrong."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from vprdistill.data.images import ImageLoadError, load_image
from vprdistill.data.place_dataset import PlaceDataset
from vprdistill.utils.atomic import atomic_path

RIGHT_COLOUR = (30, 170, 60)
WRONG_COLOUR = (210, 40, 40)
QUERY_COLOUR = (40, 90, 200)
BACKGROUND = (255, 255, 255)
FRAME = 4
GAP = 6
CAPTION_LINES = 2


def pick_queries(num_available: int, num_wanted: int) -> np.ndarray:
    """``num_wanted`` query indices spread evenly over ``range(num_available)`` (deterministic)."""
    if num_wanted <= 0 or num_available <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, num_available - 1, min(num_wanted, num_available)).round().astype(np.int64))


def _thumbnail(path: Path, size: int) -> Image.Image:
    try:
        image = load_image(path)
    except ImageLoadError:
        tile = Image.new("RGB", (size, size), (128, 128, 128))
        ImageDraw.Draw(tile).text((6, size // 2 - 6), "unreadable", fill=(255, 255, 255))
        return tile
    return ImageOps.pad(image, (size, size), color=(200, 200, 200))


def prediction_picture(
    query_path: Path,
    candidate_paths: Sequence[Path],
    correct: Sequence[bool],
    distances_m: Sequence[float],
    query_caption: str,
    thumb_size: int = 160,
) -> Image.Image:
    """One row: the query, then each candidate with a coloured frame and a caption (rank, metres to the query)."""
    font = ImageFont.load_default(size=max(10, thumb_size // 12))
    line_height = int(font.getbbox("Ag")[3]) + 4
    tile = thumb_size + 2 * FRAME
    width = GAP + (1 + len(candidate_paths)) * (tile + GAP)
    height = GAP + tile + CAPTION_LINES * line_height + GAP
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    tiles = [(query_path, QUERY_COLOUR, query_caption.split("\n"))]
    for rank, (path, right, distance) in enumerate(zip(candidate_paths, correct, distances_m), start=1):
        caption = [f"#{rank} {'right' if right else 'wrong'}", f"{distance:.1f} m"]
        tiles.append((path, RIGHT_COLOUR if right else WRONG_COLOUR, caption))
    for position, (path, colour, caption) in enumerate(tiles):
        left = GAP + position * (tile + GAP)
        draw.rectangle([left, GAP, left + tile - 1, GAP + tile - 1], fill=colour)
        canvas.paste(_thumbnail(path, thumb_size), (left + FRAME, GAP + FRAME))
        for line_number, text in enumerate(caption[:CAPTION_LINES]):
            draw.text((left, GAP + tile + 2 + line_number * line_height), text, fill=(0, 0, 0), font=font)
    return canvas


def render_prediction(
    dataset: PlaceDataset,
    query_index: int,
    candidates: np.ndarray,
    positives: np.ndarray,
    thumb_size: int = 160,
) -> Image.Image:
    """The picture of one query of ``dataset`` and its predicted database indices ``candidates`` (K,).

    A candidate is right (green) when it is among ``positives`` (that query's
    positive database indices), wrong (red) otherwise.
    """
    candidates = np.asarray(candidates, dtype=np.int64).ravel()
    candidates = candidates[candidates >= 0]  # -1 pads a row searched within a small group (an MSLS city)
    distances = dataset.distances_to_database(int(query_index))[candidates]
    return prediction_picture(
        dataset.query_paths[query_index],
        [dataset.database_paths[i] for i in candidates],
        np.isin(candidates, positives).tolist(),
        distances.tolist(),
        f"query {query_index}\n{dataset.query_conditions()[query_index]}",
        thumb_size,
    )


def save_prediction_pictures(
    dataset: PlaceDataset,
    predictions: np.ndarray,
    positives: Sequence[np.ndarray],
    out_dir: str | Path,
    num_queries: int,
    topk: int = 5,
    thumb_size: int = 160,
) -> list[Path]:
    """Write one PNG per chosen query: the query and its ``topk`` predictions.

    Args:
        dataset: gives image paths, positions and query conditions.
        predictions: (M, K) database indices, best first.
        positives: per query, the database indices that count as right.
        out_dir: created if needed; files are ``query_<index>.png``.
        num_queries: how many queries, spread evenly over the split.
        topk: predictions shown per query (at most K).
        thumb_size: side of each thumbnail in pixels.

    Returns:
        The paths written, in query order.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim != 2 or len(predictions) != dataset.num_queries or len(positives) != dataset.num_queries:
        raise ValueError(
            f"predictions must be ({dataset.num_queries}, K) with one positives array per query, "
            f"got shape {predictions.shape} and {len(positives)} arrays"
        )
    if topk < 1 or thumb_size < 8:
        raise ValueError(f"topk must be at least 1 and thumb_size at least 8, got {topk} and {thumb_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for query in pick_queries(dataset.num_queries, num_queries):
        picture = render_prediction(dataset, int(query), predictions[query, :topk], positives[query], thumb_size)
        path = out_dir / f"query_{query:05d}.png"
        with atomic_path(path) as tmp:
            picture.save(tmp, format="PNG")
        written.append(path)
    return written
