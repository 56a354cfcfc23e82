"""The scan: the one place that knows the order of the stages.

    plan -> list -> extract -> store -> candidates -> verify -> group -> select -> report / act

Each stage is a module (``plan``, ``ingest``, ``matching``, ``outputs``; the mode's
candidate search in ``modes/``); the engine that runs their work is chosen here, once.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import tempfile
import time

from .config import ScanConfig
from .engines import Engine, engine_for
from .extract import read_bytes
from .features.embeddings import load_model
from .features.faces import check_available, face_key
from .features.quality import SCORE_VERSION, quality_score
from .ingest import Progress, extract_options, extractor_key, ingest
from .matching import find_groups
from .models import Problems, ScanResult, ScanSummary
from .modes import mode_of
from .modes.faces import face_options
from .outputs import write_outputs
from .plan import make_plan, store_path
from .store import FeatureStore
from .view import CollectionView

__all__ = ["Progress", "scan"]


def scan(input_dir: str, config: ScanConfig | None = None, progress: Progress | None = None,
         collect: bool = True, engine: Engine | None = None) -> ScanResult:
    """Scan a local folder or a cloud prefix (``az://``, ``s3://``), group duplicates,
    choose the best of each group, write the reports and (unless ``dry_run``) the
    output folder or prefix.  ``collect=False`` keeps the per-image results out of
    memory (they are in the reports).  ``engine``: one the caller started (and closes);
    else the scan starts ``config.engine`` and closes it at the end."""
    config = (config or ScanConfig()).validate()
    if engine is None:
        engine = engine_for(config.engine, config.workers, config.address)
        try:
            return _scan(input_dir, config, progress, collect, engine)
        finally:
            engine.close()
    return _scan(input_dir, config, progress, collect, engine)


def _scan(input_dir: str, config: ScanConfig, progress: Progress | None, collect: bool,
          engine: Engine) -> ScanResult:
    timings: dict[str, float] = {}
    problems = Problems()
    summary = ScanSummary()
    with tempfile.TemporaryDirectory(prefix="pixdedup-") as tmp:
        plan = make_plan(input_dir, config, tmp)
        if plan.source is not None:  # one rate limit for every process that reads the bucket
            limiter = engine.shared_limiter(config.max_requests_per_second)
            if limiter is not None:
                plan.source.pacer.bucket = limiter
        plan.output.check()
        t0 = time.perf_counter()
        with FeatureStore(store_path(config, plan.out), reset=config.reset) as store:
            plan.output.clear()  # only once this run holds the store: a refused run removes nothing
            run = store.start_run(plan.root, config.mode)
            store.rescore(SCORE_VERSION, quality_score)  # once, after a scoring change
            options, runner, faces = extract_options(config), None, None
            if mode_of(config).faces:
                face = face_options(config)
                check_available(face)
                faces = face_key(face)
                options = dataclasses.replace(options, faces=face)
            if mode_of(config).embeds:
                embedder = load_model(config.model, config.device)
                batch = config.embed_batch_size or (256 if embedder.backend.endswith("cuda") else 32)
                runner = engine.model_runner(embedder, batch, functools.partial(
                    load_model, config.model, config.device))
                options = dataclasses.replace(options, model_input_size=embedder.input_size)
            ingest(store, plan.listing, options, engine, run, summary, progress,
                   source=plan.source, staging=plan.staging,
                   download_concurrency=config.download_concurrency, batch=config.batch_size,
                   runner=runner, faces=faces)
            if runner is not None:
                timings["embed"] = round(runner.seconds, 4)
                summary.embedded = runner.embedded
                for reason in runner.failures.values():
                    problems.add("embedding", reason)
            summary.removed = store.forget_unseen(run)
            timings["extract"] = time.perf_counter() - t0
            view = CollectionView(store)
            groups, found = find_groups(view, config, engine, timings, progress,
                                 model=runner.embedder.key if runner else None, problems=problems,
                                 summary=summary,
                                 read=plan.source.read if plan.source is not None else read_bytes)
            if faces is not None:  # the seed's report: encoding and matching times
                timings["face_matching"] = timings["candidates"] + timings["verify"]
            results, report_paths = write_outputs(store, view, groups, plan, config, engine,
                                                  summary, timings, collect, t0, problems, found)
            for key, value in (("groups", summary.groups), ("duplicates", summary.duplicates),
                               ("extractor", extractor_key(options)),
                               ("config", config_json(config))):
                store.set_meta(key, str(value))
            store.finish_run(run)
        if plan.staging:
            shutil.rmtree(plan.staging, ignore_errors=True)
    return ScanResult(results=results, groups=groups, summary=summary,
                      timings=timings, output_dir=plan.out, report_paths=report_paths,
                      problems=problems, engine=engine.describe())


def config_json(config: ScanConfig) -> str:
    return json.dumps(dataclasses.asdict(config), default=str)
