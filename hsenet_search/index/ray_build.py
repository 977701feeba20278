"""The embedding step of ``index build --ray``: a Ray Data pipeline over one machine or a cluster.

list cases -> read + preprocess (Ray tasks, ``cpus_per_task`` each, through the same
:func:`~hsenet_search.embedding.prepare_case` and tensor cache as the single-process build) ->
encode (an actor pool holding the model: one actor per ``gpus_per_actor`` GPUs when the cluster has GPUs,
else one CPU actor) -> the driver writes the same float16 shards, row metadata and ``failures.jsonl``
through the builder's :class:`~hsenet_search.index.shards.ShardWriter`. Blocks stream through Ray's
executor in case order (bounded memory, nothing is materialised), so the shards equal those of the
single-process build; finished shards survive a crash and ``--resume`` skips them. The builder's own
assembly step then publishes the index. Ray is imported only here (the ``scale`` extra).
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hsenet_search.data.cache import PreprocessCache
from hsenet_search.data.cases import Case
from hsenet_search.data.preprocess import Profile
from hsenet_search.embedding import (
    EmbeddedBatch,
    SliceRecipe,
    embed_prepared,
    index_form,
    prepare_or_error,
    slice_recipe,
    volume_dim,
)
from hsenet_search.errors import DatasetError

RAY_EXTRA = "pip install 'hsenet-search[scale]'"
MAX_BLOCKS = 10_000  # input blocks (one preprocess task each): fine-grained retries, bounded scheduling cost


@dataclass(frozen=True)
class RayOptions:
    """Where and how the Ray build runs."""

    address: str = "auto"  # "auto": start a local Ray on this machine; else a cluster address
    cpus_per_task: float = 1.0  # CPUs reserved by each read + preprocess task
    gpus_per_actor: float = 1.0  # GPUs per encoder actor (used only when the cluster has GPUs)


def connect(address: str) -> dict:
    """Start a local Ray (``"auto"``) or join the cluster at ``address``; returns its resources."""
    try:
        import ray
    except ImportError as e:
        raise DatasetError(f"--ray needs the Ray extra ({RAY_EXTRA})") from e
    if not ray.is_initialized():
        try:
            if address == "auto":
                ray.init(
                    num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False, configure_logging=False
                )
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise DatasetError(f"cannot reach a Ray cluster at {address!r}: {e}") from e
    return ray.cluster_resources()


def _preprocess(
    batch: dict[str, np.ndarray], profile: Profile, recipe: SliceRecipe, cache_dir: str | None
) -> dict[str, np.ndarray]:
    """Ray task: prepare the pickled cases of ``batch`` (the one road); failures become error strings."""
    cache = PreprocessCache(Path(cache_dir) if cache_dir else None)
    items = [prepare_or_error(pickle.loads(b), profile, recipe, cache) for b in batch["case"]]
    return {
        "pos": batch["pos"],
        "prepared": np.array([pickle.dumps(p) if p is not None else b"" for p, _ in items], dtype=object),
        "error": np.array([err or "" for _, err in items], dtype=object),
    }


class _Encoder:
    """Ray actor: holds the model on its GPU (or CPU) and embeds the prepared cases."""

    def __init__(self, model, device: str):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.array([not e for e in batch["error"]], dtype=bool)
        form = index_form(self.model)
        emb = np.zeros((len(ok), volume_dim(self.model, form=form)), dtype=np.float32)
        t0 = time.perf_counter()
        if ok.any():
            emb[ok] = embed_prepared(self.model, [pickle.loads(b) for b in batch["prepared"][ok]], form=form)
        seconds = time.perf_counter() - t0
        return {
            "pos": batch["pos"],
            "error": batch["error"],
            "embedding": emb,
            "seconds": np.full(len(ok), seconds / len(ok)),
        }


def embed_stream(
    model, cases: Sequence[Case], *, options: RayOptions, batch_size: int, cache: PreprocessCache
) -> Iterator[EmbeddedBatch]:
    """Yield :class:`~hsenet_search.embedding.EmbeddedBatch` batches in case order."""
    import ray

    resources = connect(options.address)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # shards come out as in the single-process build
    ctx.enable_progress_bars = False  # the builder's rich bar is the progress display
    gpus = float(resources.get("GPU", 0))
    if gpus > 0:
        actors, resources = max(1, int(gpus // options.gpus_per_actor)), {"num_gpus": options.gpus_per_actor}
    else:
        actors, resources = 1, {"num_cpus": 1}
    encoder = {
        **resources,
        "fn_constructor_kwargs": {"model": model.cpu(), "device": "cuda" if gpus else "cpu"},
        # an explicit strategy unlike the tasks' SPREAD: Ray Data would otherwise fuse the preprocess
        # tasks into the encoder actors and decode serially inside them
        "scheduling_strategy": "DEFAULT",
    }
    rows = [{"pos": i, "case": pickle.dumps(c)} for i, c in enumerate(cases)]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), MAX_BLOCKS)))
    # SPREAD puts the decode tasks on every node
    ds = ds.map_batches(
        _preprocess,
        batch_size=1,
        num_cpus=options.cpus_per_task,
        scheduling_strategy="SPREAD",
        fn_kwargs={"profile": model.profile, "recipe": slice_recipe(model), "cache_dir": str(cache.root)},
    )
    ds = ds.map_batches(_Encoder, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors), **encoder)
    try:
        for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=1):
            errors = batch["error"].tolist()
            ok = [j for j, err in enumerate(errors) if not err]
            positions = batch["pos"].tolist()
            yield EmbeddedBatch(
                [positions[j] for j in ok],
                batch["embedding"][ok],
                [(p, err) for p, err in zip(positions, errors, strict=True) if err],
                float(batch["seconds"].sum()),
            )
    except ray.exceptions.RayError as e:  # a task or actor that failed past its retries
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatasetError(
            f"the Ray pipeline failed ({first}); the shards written so far are kept: rerun with --resume"
        ) from e
