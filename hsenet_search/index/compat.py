"""Which models may query or extend an index: the model/index compatibility check of the index format."""

from __future__ import annotations

from pathlib import Path

from hsenet_search.errors import IndexMismatchError

from .store import IndexManifest


def check_model_matches(manifest: IndexManifest, model, index_dir: str | Path) -> None:
    """Refuse a model whose fingerprint, preprocessing hash or embedding size differs from the index's.

    A text-only encoder (no ``profile``) is checked by fingerprint and size: it embeds no volume.
    """
    if model.fingerprint != manifest.model_fingerprint:
        raise IndexMismatchError(
            f"model fingerprint {model.fingerprint[:12]} does not match the index's "
            f"{manifest.model_fingerprint[:12]} (built with {manifest.model_name}); use the same model or rebuild",
            index_dir,
        )
    profile = getattr(model, "profile", None)
    if profile is not None and profile.hash != manifest.preprocessing_hash:
        raise IndexMismatchError(
            f"preprocessing {model.profile.hash} differs from the index's {manifest.preprocessing_hash}",
            index_dir,
        )
    stored = {"reports": model.embedding_dim, "volumes": model.embedding_dim * (2 if manifest.bridge else 1)}
    for kind, size in stored.items():  # a bridged index stores volumes as [plain, bank] / sqrt 2
        if size != manifest.dims[kind]:
            raise IndexMismatchError(
                f"model embedding size {size} ({kind}) differs from the index's {manifest.dims[kind]}", index_dir
            )
