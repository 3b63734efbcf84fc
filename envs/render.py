"""Pictures of a board: text (``ansi``), RGB arrays (``rgb_array``) and episode strips as PNG.

Cell kinds: *given* (part of the puzzle), *correct* and *wrong* (a filled blank that
matches or not the solution; without a solution, conflict-free or not), *undecided*.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from envs.rules import conflict_mask

GIVEN, CORRECT, WRONG, UNDECIDED = 0, 1, 2, 3
_COLORS = {GIVEN: (20, 20, 20), CORRECT: (0, 130, 40), WRONG: (210, 30, 30)}


def cell_kinds(puzzle: np.ndarray, answer: np.ndarray, solution: np.ndarray | None) -> np.ndarray:
    """``(81,)`` kinds of each cell: GIVEN, CORRECT, WRONG or UNDECIDED."""
    kinds = np.full(81, UNDECIDED)
    filled = answer > 0
    right = answer == solution if solution is not None else ~conflict_mask(answer)
    kinds[filled & right] = CORRECT
    kinds[filled & ~right] = WRONG
    kinds[puzzle > 0] = GIVEN
    return kinds


def board_text(puzzle: np.ndarray, answer: np.ndarray, solution: np.ndarray | None) -> str:
    """A readable board: ``5`` given, ``5+`` correct, ``5!`` wrong, ``.`` undecided."""
    kinds = cell_kinds(puzzle, answer, solution)
    mark = {GIVEN: " ", CORRECT: "+", WRONG: "!", UNDECIDED: " "}
    lines = []
    for r in range(9):
        if r in (3, 6):
            lines.append("---------+----------+---------")
        cells = []
        for c in range(9):
            i = 9 * r + c
            d = "." if answer[i] == 0 else str(int(answer[i]))
            cells.append(f"{d}{mark[int(kinds[i])]}")
        lines.append(" | ".join(" ".join(cells[3 * b : 3 * b + 3]) for b in range(3)))
    lines.append("(digit = given, + correct, ! wrong, . undecided)")
    return "\n".join(lines)


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def board_image(puzzle: np.ndarray, answer: np.ndarray, solution: np.ndarray | None, cell: int = 32) -> np.ndarray:
    """``uint8 (H, W, 3)`` picture of the board, ``H = W = 9 * cell + 4`` pixels.

    Givens are black on grey, correct cells green, wrong cells red, undecided blank.
    """
    kinds = cell_kinds(puzzle, answer, solution)
    size = 9 * cell + 4
    img = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = _font(int(cell * 0.7))
    for i in range(81):
        r, c = divmod(i, 9)
        x0, y0 = 2 + c * cell, 2 + r * cell
        if kinds[i] == GIVEN:
            draw.rectangle([x0, y0, x0 + cell, y0 + cell], fill=(225, 225, 225))
        if answer[i] > 0:
            draw.text((x0 + cell / 2, y0 + cell / 2), str(int(answer[i])), fill=_COLORS[int(kinds[i])], font=font, anchor="mm")
    for k in range(10):
        w = 3 if k % 3 == 0 else 1
        p = 2 + k * cell
        draw.line([(p, 0), (p, size)], fill=(0, 0, 0), width=w)
        draw.line([(0, p), (size, p)], fill=(0, 0, 0), width=w)
    return np.asarray(img, dtype=np.uint8)


def save_episode_png(frames: list[np.ndarray], path: str | os.PathLike, gap: int = 8) -> None:
    """Save ``rgb_array`` frames of one episode side by side as a PNG (written atomically)."""
    if not frames:
        raise ValueError("no frames to save")
    h = max(f.shape[0] for f in frames)
    w = sum(f.shape[1] for f in frames) + gap * (len(frames) - 1)
    strip = np.full((h, w, 3), 255, dtype=np.uint8)
    x = 0
    for f in frames:
        strip[: f.shape[0], x : x + f.shape[1]] = f
        x += f.shape[1] + gap
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    Image.fromarray(strip).save(tmp, format="PNG")
    os.replace(tmp, path)
