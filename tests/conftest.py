from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter


def run_cli(*args: str, check: bool = True, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m pixdedup ARGS`` in a subprocess; ``check``: a non-zero exit fails the
    test with the command's output."""
    proc = subprocess.run([sys.executable, "-m", "pixdedup", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers by place: the cloud and cluster tests need the loopback servers (the
    cluster tests a Ray cluster they start), the browser tests
    Chromium (``-m "not services and not browser"`` runs without either)."""
    for item in items:
        path = Path(str(item.fspath))
        if path.parent.name in ("cloud", "cluster") and path.parent.parent.name == "tests":
            item.add_marker(pytest.mark.services)
        if path.name == "test_browser.py":
            item.add_marker(pytest.mark.browser)


def synthetic_photo(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A seeded, photo-like image: a smooth colour gradient with many random shapes
    (texture for keypoints), lightly blurred."""
    rng = random.Random(seed)
    w, h = size
    gen = np.random.default_rng(seed)
    base = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        a, b, d = gen.uniform(0, 255, 3)
        base[:, :, c] = np.linspace(a, b, w)[None, :] * 0.5 + np.linspace(d, a, h)[:, None] * 0.5
    img = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(60):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(10, w // 3), y0 + rng.randrange(10, h // 3)
        colour = tuple(rng.randrange(256) for _ in range(3))
        kind = rng.random()
        if kind < 0.4:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind < 0.8:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=rng.randrange(2, 8))
    return img.filter(ImageFilter.GaussianBlur(0.8))


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("synthetic_photos")
    out = []
    for seed in range(4):
        path = folder / f"photo{seed}.jpg"
        synthetic_photo(seed).save(path, "JPEG", quality=92)
        out.append(path)
    return out
