"""Embedding models, the batching runner, the ANN candidate search and the store's
vectors: the offline default model, on the CPU."""

import numpy as np
import pytest
import skimage.data

from pixdedup.candidates import embedding_candidates
from pixdedup.extract import model_input
from pixdedup.features import embeddings as emb
from pixdedup.models import ImageRecord, ImageRef, RecordStatus
from pixdedup.store import FeatureStore


@pytest.fixture(scope="module")
def lite0():
    return emb.load_model("efficientnet-lite0", "cpu")


def _inputs(*images):
    return np.stack([model_input(np.ascontiguousarray(im), 224) for im in images])


def test_default_model_is_available_offline_and_embeds(lite0):
    assert emb.MODELS.get(emb.DEFAULT_MODEL).available() is None
    assert lite0.key == "efficientnet-lite0@1" and lite0.input_size == 224
    cat, coffee = skimage.data.chelsea(), skimage.data.coffee()
    x = lite0.embed(_inputs(cat, coffee, cat[::2, ::2], cat[:, ::-1]))
    assert x.shape == (4, 1280) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    sims = x @ x.T
    assert sims[0, 2] > 0.97  # the same photo at half size
    assert sims[0, 3] > 0.9  # mirrored
    assert sims[0, 1] < 0.6  # a different photo
    again = lite0.embed(_inputs(cat))
    assert np.allclose(again[0], x[0], atol=1e-5)  # deterministic


def test_onnx_backend_matches_torch_backend(lite0):
    if lite0.backend != "onnxruntime-cpu":
        pytest.skip("onnxruntime not installed: the CPU path runs torch")
    torch_model = emb.TorchEmbedder(lite0.key, 224, emb._lite0_torch(), "cpu")
    batch = _inputs(skimage.data.astronaut(), skimage.data.rocket())
    assert np.allclose(torch_model.embed(batch), lite0.embed(batch), atol=2e-3)


def test_unknown_and_unavailable_models_are_one_line_errors(tmp_path):
    from pixdedup.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="valid names: clip-vit-b-32, efficientnet-lite0"):
        emb.load_model("resnet-9000", "cpu")
    with pytest.raises(emb.ModelError, match="is not a readable ONNX model"):
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(b"not a model")
        emb.load_model(f"onnx:{bad}", "cpu")


def test_own_onnx_model_is_used_with_its_input_size(tmp_path):
    torch = pytest.importorskip("torch")

    class Tiny(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x, 4)

    path = tmp_path / "tiny.onnx"
    emb._export_onnx(Tiny(), 96, str(path))
    model = emb.load_model(f"onnx:{path}", "cpu")
    assert model.input_size == 96 and model.key.startswith("onnx:tiny.onnx@")
    out = model.embed(np.zeros((2, 96, 96, 3), np.uint8) + 100)
    assert out.shape == (2, 48) and np.allclose(np.linalg.norm(out, axis=1), 1.0)


class _Fake:
    key, input_size, backend = "fake@1", 4, "test"

    def __init__(self, fail_on=None, fail_always=False, poison=None):
        self.batches = []
        self.fail_on = fail_on
        self.fail_always = fail_always
        self.poison = poison
        """A pixel value that makes any batch holding it fail (one odd image)."""

    def embed(self, batch):
        self.batches.append(len(batch))
        if self.fail_always or (self.fail_on is not None and len(self.batches) == self.fail_on):
            raise RuntimeError("out of memory")
        if self.poison is not None and (batch == self.poison).all(axis=(1, 2, 3)).any():
            raise ValueError("odd input")
        return emb.normalise_rows(batch.reshape(len(batch), -1).astype(np.float32) + 1)


def test_runner_batches_in_the_background_and_returns_every_vector():
    fake = _Fake()
    runner = emb.EmbeddingRunner(fake, batch_size=4)
    for i in range(10):
        runner.add(f"u{i}", np.full((4, 4, 3), i, np.uint8))
    got = dict(runner.close())
    assert sorted(got) == [f"u{i}" for i in range(10)]
    assert fake.batches == [4, 4, 2] and runner.embedded == 10
    assert all(v.dtype == np.float16 for v in got.values())


def test_runner_reports_a_broken_model_as_one_error():
    runner = emb.EmbeddingRunner(_Fake(fail_always=True), batch_size=2)
    runner.add("a", np.zeros((4, 4, 3), np.uint8))
    runner.add("b", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(emb.ModelError, match="embedding failed: RuntimeError: out of memory"):
        runner.close()


def test_runner_retries_a_failed_batch_image_by_image():
    fake = _Fake(fail_on=1)  # the first batch fails once (a transient error)
    runner = emb.EmbeddingRunner(fake, batch_size=3)
    for i in range(3):
        runner.add(f"u{i}", np.full((4, 4, 3), i, np.uint8))
    assert sorted(dict(runner.close())) == ["u0", "u1", "u2"]
    assert fake.batches == [3, 1, 1, 1] and runner.failures == {}


def test_one_image_the_model_cannot_take_gets_no_vector_and_a_reason():
    runner = emb.EmbeddingRunner(_Fake(poison=7), batch_size=4)
    for i in range(8):
        runner.add(f"u{i}", np.full((4, 4, 3), i, np.uint8))
    got = dict(runner.close())
    assert sorted(got) == [f"u{i}" for i in range(8) if i != 7]
    assert runner.failures == {"u7": "ValueError: odd input"}
    assert runner.embedded == 7


def _unit_rows(n, dim, seed):
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_cosine_range_search_exact_and_ivf(monkeypatch):
    import pixdedup.candidates as cand

    base = _unit_rows(600, 64, 0)
    twins = base[:50] + 0.05 * _unit_rows(50, 64, 1)
    x = np.vstack([base, twins / np.linalg.norm(twins, axis=1, keepdims=True)])
    exact = embedding_candidates(x, 0.9)
    pairs = {(int(a), int(b)) for a, b, _ in exact}
    assert pairs == {(i, 600 + i) for i in range(50)}
    sims = {(int(a), int(b)): s for a, b, s in exact}
    assert np.isclose(sims[(0, 600)], float(x[0] @ x[600]), atol=1e-5)
    monkeypatch.setattr(cand, "EXACT_EMBEDDING_LIMIT", 100)
    approx = {(int(a), int(b)) for a, b, _ in embedding_candidates(x, 0.9)}
    assert len(approx & pairs) >= 45 and approx <= pairs


def test_store_keeps_vectors_per_model_and_voids_them_when_the_file_changes(tmp_path):
    ref = ImageRef(uri="/x/a.jpg", rel_path="a.jpg", size=10, mtime=1.0)
    rec = ImageRecord(ref=ref, status=RecordStatus.OK, content_hash="c", width=4, height=4,
                      hashes={"whash": 1, "phash": 2, "dhash": 3})
    with FeatureStore(str(tmp_path / "pixdedup.db")) as store:
        store.put([rec], "ex", 1)
        assert store.fresh([ref], "ex", 1, model="m@1") == set()
        assert store.put_embeddings("m@1", [("/x/a.jpg", np.ones(8) / np.sqrt(8))]) == 1
        assert store.fresh([ref], "ex", 1, model="m@1") == {"/x/a.jpg"}
        assert store.fresh([ref], "ex", 1, model="other@1") == set()
        ids, matrix = store.embeddings("m@1")
        assert len(ids) == 1 and matrix.dtype == np.float16 and matrix.shape == (1, 8)
        store.put([rec], "ex", 2)  # re-extracted (the file changed): its vector is void
        assert store.embedding_count("m@1") == 0
        store.put_embeddings("m@1", [("/x/a.jpg", np.ones(8))])
        assert store.forget_unseen(3) == 1
        assert store.embedding_count() == 0  # rows of deleted images go with them


def test_cuda_embedding_when_a_gpu_is_present():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine (CUDA-specific test)")
    model = emb.load_model("efficientnet-lite0", "cuda")
    assert model.backend == "torch-cuda"
    x = model.embed(_inputs(skimage.data.chelsea(), skimage.data.chelsea()[:, ::-1]))
    assert x.shape == (2, 1280) and float(x[0] @ x[1]) > 0.9


def test_several_vectors_per_image_with_boxes_and_an_older_store_moved_over(tmp_path):
    import sqlite3

    refs = [ImageRef(uri=f"/x/{n}.jpg", rel_path=f"{n}.jpg", size=10, mtime=1.0) for n in "ab"]
    recs = [ImageRecord(ref=r, status=RecordStatus.OK, content_hash=r.uri, width=4, height=4,
                        hashes={"whash": 1, "phash": 2, "dhash": 3}) for r in refs]
    db = tmp_path / "pixdedup.db"
    with FeatureStore(str(db)) as store:
        store.put(recs, "ex", 1)
        unit = np.eye(4)
        assert store.put_vectors("faces@1", [("/x/a.jpg", 1, (1, 2, 30, 40), unit[0]),
                                             ("/x/a.jpg", 2, (50, 2, 80, 40), unit[1]),
                                             ("/x/b.jpg", 1, (0, 0, 9, 9), unit[2])]) == 3
        store.put_embeddings("m@1", [("/x/b.jpg", unit[3])])
        ids, items, boxes, matrix = store.vectors("faces@1")
        assert items.tolist() == [1, 2, 1] and boxes[1] == [50.0, 2.0, 80.0, 40.0]
        assert len(set(ids.tolist())) == 2 and matrix.shape == (3, 4)
        assert store.embeddings("faces@1")[0].tolist() == []  # no whole-image vector there
        assert store.embeddings("m@1")[1].tolist() == [[0, 0, 0, 1]]
        conn = store.conn
        # a store written before the vectors table: one vector per image and model
        conn.execute("CREATE TABLE embeddings (image INTEGER, model TEXT, vector BLOB, "
                     "PRIMARY KEY (image, model))")
        conn.execute("INSERT INTO embeddings SELECT id, 'old@1', ? FROM images WHERE uri='/x/a.jpg'",
                     (np.ones(4, np.float16).tobytes(),))
    with FeatureStore(str(db)) as store:
        ids, matrix = store.embeddings("old@1")
        assert len(ids) == 1 and matrix.tolist() == [[1, 1, 1, 1]]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name='embeddings'").fetchone() == (0,)
