"""The tutorial notebooks in examples/ run top to bottom (a kernel from this Python,
offline, on the demo photos), so they can never go stale; they are kept without
outputs in the repository."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_the_tutorials_are_there_and_kept_without_outputs() -> None:
    assert [p.name for p in NOTEBOOKS] == ["01-quick-start.ipynb", "02-choosing-settings.ipynb",
                                           "03-acting.ipynb"]
    for path in NOTEBOOKS:
        book = json.loads(path.read_text(encoding="utf-8"))
        for cell in book["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, path.name


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the three notebooks: the demo photos are made once."""
    return tmp_path_factory.mktemp("examples")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_runs_top_to_bottom(path: Path, workdir: Path) -> None:
    book = nbformat.read(path, as_version=4)
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = NotebookClient(book, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()  # raises CellExecutionError with the failing cell and its traceback
    outputs = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    texts = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    if path.stem == "01-quick-start":
        assert "groups" in texts and len(images) == 1  # the groups grid
    if path.stem == "02-choosing-settings":
        assert len(images) == 3 and (workdir / "work" / "hash_distances.png").stat().st_size > 10_000
    if path.stem == "03-acting":
        assert "the collection is exactly as before" in texts


def test_the_kernel_is_this_python(tmp_path: Path) -> None:
    """The notebooks' kernel runs this interpreter (the project's venv), not whatever
    ``python`` comes first on PATH."""
    book = nbformat.v4.new_notebook()
    book.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    NotebookClient(book, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert book.cells[0].outputs[0]["text"].strip() == sys.prefix
