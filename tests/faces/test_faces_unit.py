"""Faces mode's parts: detection and embedding on real portraits, the face search
(threshold, possible band, small faces, faces of one image), the linkage that does not
chain, a user's ONNX embedder, and the store rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from pixdedup.features.faces import (
    Face,
    FaceOptions,
    face_distance,
    face_extractor,
    face_key,
    face_model_spec,
)
from pixdedup.models import Evidence, Group
from pixdedup.modes.faces import FaceLookup, person_groups

from .conftest import faceless


def faces_of(path: Path, **options: object) -> list[Face]:
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return face_extractor(FaceOptions(**options)).faces(rgb, rgb.shape[1], rgb.shape[0])  # type: ignore[arg-type]


def test_a_portrait_has_one_face_with_box_landmarks_quality_and_a_128d_vector(
        portraits: list[Path]) -> None:
    w, h = Image.open(portraits[0]).size
    (face,) = faces_of(portraits[0])
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert face.size > 100  # a formal portrait: the face fills a good part of the frame
    assert len(face.landmarks) == 10
    assert all(x0 - 10 <= x <= x1 + 10 for x in face.landmarks[0::2])
    assert face.vector.shape == (128,) and np.isfinite(face.vector).all()
    assert 0.5 < face.quality <= 1.0 and face.pose > 0.7  # frontal, sharp, well exposed


def test_faceless_photos_have_no_face(tmp_path: Path) -> None:
    for path in faceless(tmp_path):
        assert faces_of(path) == [], path.name


def test_same_person_within_the_threshold_different_people_beyond(
        portraits: list[Path], tmp_path: Path) -> None:
    src = portraits[0]
    with Image.open(src) as im:
        ImageOps.mirror(im.convert("RGB")).resize((im.width * 2 // 3, im.height * 2 // 3)).save(
            tmp_path / "variant.jpg", quality=75)
    a = faces_of(src)[0].vector
    b = faces_of(tmp_path / "variant.jpg")[0].vector
    others = np.array([faces_of(p)[0].vector for p in portraits[1:6]])
    threshold = face_model_spec("dlib-resnet").threshold
    assert face_distance(a[None], b[None], "euclidean")[0, 0] < 0.3
    assert (face_distance(a[None], others, "euclidean") > threshold).all()


def test_dlib_resnet_run_by_onnx_runtime_gives_dlibs_own_descriptors(
        portraits: list[Path]) -> None:
    import dlib

    from pixdedup.features import dlib_net
    from pixdedup.features.faces import DlibResnet, dlib_model_file

    embedder = DlibResnet()
    assert embedder.backend.startswith("onnxruntime")
    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(dlib_model_file("shape_predictor_5_face_landmarks.dat"))
    own = dlib.face_recognition_model_v1(
        dlib_model_file("dlib_face_recognition_resnet_model_v1.dat"))
    for path in portraits[:4]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        shapes = [landmarks(rgb, r) for r in detector(rgb, 0)]
        assert len(shapes) == 1, path.name
        ours = embedder.embed(rgb, shapes)
        chip = dlib.get_face_chip(rgb, shapes[0], dlib_net.CHIP_SIZE, dlib_net.CHIP_PADDING)
        theirs = np.asarray(own.compute_face_descriptor(chip), dtype=np.float32)
        assert ours.shape == (1, 128)
        assert float(np.linalg.norm(ours[0] - theirs)) < 1e-4, path.name


def test_a_file_that_is_not_dlibs_face_resnet_is_refused(tmp_path: Path) -> None:
    from pixdedup.features.dlib_net import DlibNetError, read_dlib_resnet
    from pixdedup.features.faces import dlib_model_file

    other = dlib_model_file("shape_predictor_5_face_landmarks.dat")
    with pytest.raises(DlibNetError, match="is not dlib's face-recognition ResNet"):
        read_dlib_resnet(other)
    with pytest.raises(DlibNetError, match="cannot read"):
        read_dlib_resnet(str(tmp_path / "absent.dat"))


def test_libfacedetection_boxes_give_the_same_embedding_as_hog(portraits: list[Path]) -> None:
    hog = faces_of(portraits[1])[0]
    lfd = faces_of(portraits[1], detector="libfacedetection")[0]
    assert face_distance(hog.vector[None], lfd.vector[None], "euclidean")[0, 0] < 0.12


def lookup(vectors: list[list[float]], positions: list[int], sizes: list[float] | None = None,
           items: list[int] | None = None, threshold: float = 0.5) -> FaceLookup:
    n = len(vectors)
    sizes = sizes or [100.0] * n
    meta = [{"box": [0, 0, s, s]} for s in sizes]
    found = FaceLookup("euclidean", threshold, np.asarray(positions), np.asarray(items or [0] * n),
                       meta, np.asarray(vectors, np.float32), np.ones(n, bool),
                       np.asarray(sizes) >= 32, set(positions))
    for row, p in enumerate(positions):
        found.rows_of.setdefault(p, []).append(row)
    return found


def test_search_threshold_possible_band_small_faces_and_one_image() -> None:
    faces = lookup([[0, 0], [0.3, 0], [1.5, 0], [2.03, 0], [5, 0], [5.1, 0], [9, 0], [9.05, 0]],
                   positions=[0, 1, 2, 3, 4, 5, 6, 6], sizes=[100] * 4 + [100, 20, 100, 100])
    same, possible = faces.search(8)
    assert same == {(0, 1): pytest.approx(0.3)}
    # 0.53 is just above 0.5: reported, not merged; so is a face too small to trust
    assert possible == {(2, 3): pytest.approx(0.53), (4, 5): pytest.approx(0.1)}
    # the two faces of image 6 are never one person, however close


def test_linkage_does_not_chain_look_alikes() -> None:
    """A - B - C - D each 0.4 apart, A and C 0.8: union-find would make one group of
    four; against the best face, A joins B only, and C joins D."""
    faces = lookup([[0, 0], [0.4, 0], [0.8, 0], [1.2, 0]], positions=[0, 1, 2, 3])
    same, _ = faces.search(8)
    groups = person_groups([], sorted(same), faces, lambda p: (p,), min, lambda a, b: False)
    assert sorted(sorted(g.members) for g in groups) == [[0, 1], [2, 3]]
    for g in groups:
        for m in g.members:
            if m != g.best:
                assert g.evidence[m].stage == "face" and g.evidence[m].face_distance <= 0.5


def test_copies_of_one_photo_count_once() -> None:
    """Photo 0 and its copies 1 and 2 (one group of copies), another person's photo 3:
    0.52 from photo 0 but 0.48 and 0.49 from the re-encoded copies.  Compared by its
    best, the photo stays apart: its copies are not more chances to cross 0.5."""
    faces = lookup([[0, 0], [0.04, 0], [0.03, 0], [0.52, 0]], positions=[0, 1, 2, 3])
    copies = [Group(1, 0, [0, 1, 2], {1: Evidence("hash"), 2: Evidence("hash")})]
    pairs = [(0, 1), (0, 2), (1, 3), (2, 3)]
    groups = person_groups(copies, pairs, faces, lambda p: (p,), min, lambda a, b: False)
    assert [sorted(g.members) for g in groups] == [[0, 1, 2]]
    # a user's "not the same person" between a copy and another photo keeps the photos apart
    near = lookup([[0, 0], [0.04, 0], [0.03, 0], [0.2, 0]], positions=[0, 1, 2, 3])
    joined = person_groups(copies, pairs, near, lambda p: (p,), min, lambda a, b: False)
    assert [sorted(g.members) for g in joined] == [[0, 1, 2, 3]]
    assert joined[0].evidence[3].stage == "face" and joined[0].evidence[1].stage == "hash"
    apart = person_groups(copies, pairs, near, lambda p: (p,), min,
                          lambda a, b: {a, b} == {2, 3})
    assert [sorted(g.members) for g in apart] == [[0, 1, 2]]


def test_store_key_names_detector_policy_and_model_version() -> None:
    assert face_key(FaceOptions()) == "faces/1:hog@640+dlib-resnet@1"
    assert face_key(FaceOptions(detector="libfacedetection", small_faces=True)) == \
        "faces/1:libfacedetection@640+small+dlib-resnet@1"


def make_onnx_embedder(path: Path) -> None:
    """A tiny ArcFace-shaped graph: 1x3x112x112 in, the mean of each channel over 4x4
    cells out (48-d): enough to run the whole path."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[28, 28], strides=[28, 28]),
         helper.make_node("Flatten", ["p"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 112, 112])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 48])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_own_onnx_face_model_aligns_embeds_and_is_keyed_by_its_file(
        portraits: list[Path], tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    make_onnx_embedder(path)
    spec = face_model_spec(f"onnx:{path}")
    assert spec.metric == "cosine" and spec.threshold == 0.6
    (face,) = faces_of(portraits[2], model=f"onnx:{path}")
    assert face.vector.shape == (48,)
    assert np.linalg.norm(face.vector) == pytest.approx(1.0, abs=1e-5)
    key = face_key(FaceOptions(model=f"onnx:{path}"))
    assert key.startswith("faces/1:hog@640+tiny.onnx@") and len(key.rsplit("@", 1)[1]) == 16
