"""Imported once by the local engine's forkserver (``local.WORKER_PRELOAD``), before it
forks the worker processes: what each worker would otherwise load on its first image
(the image plugins, the HEIC opener, ``numpy.ma`` that ``np.median`` imports on its
first call; about 60 ms a worker) is then loaded once and shared."""

from __future__ import annotations

from ..decode import warm_up

warm_up()
