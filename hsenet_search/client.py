"""A Python client for ``hsenet-search serve``, with the query methods of :class:`SearchEngine`.

    from hsenet_search.client import Client
    client = Client("http://127.0.0.1:8000", token="...")
    hits = client.search_text("Bilateral pleural effusion.", k=10, labels=["Cardiomegaly"]).hits

Results are the engine's own :class:`~hsenet_search.engine.SearchResult` / :class:`~hsenet_search.engine.Hit`
objects; an error answer raises the server's typed error (``QueryError``, ``VolumeError``, ...) from
:mod:`hsenet_search.errors`, and a busy or unreachable server raises :class:`ServiceError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import httpx

from hsenet_search import errors
from hsenet_search.engine import Hit, SearchResult


class ServiceError(errors.HSENetError):
    """The server is busy (503), unreachable, or answered something that is not the API's JSON."""


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        detail, kind = str(body.get("detail", "")), str(body.get("type", ""))
    except ValueError:
        detail, kind = response.text[:200], ""
    error = getattr(errors, kind, None)
    if response.status_code >= 500 or not (isinstance(error, type) and issubclass(error, errors.HSENetError)):
        error = errors.QueryError if response.status_code < 500 else ServiceError
    raise error(f"HTTP {response.status_code}: {detail}")


def _result(body: dict) -> SearchResult:
    return SearchResult(body["query"], body["target"], [Hit(**hit) for hit in body["hits"]])


class Client:
    """Talks to one server; ``index`` picks a loaded index by name (default: the server's first)."""

    def __init__(self, url: str, token: str | None = None, *, index: str | None = None, timeout: float = 300.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.index = index
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach {self._http.base_url} ({type(exc).__name__}: {exc})") from exc
        _raise_for(response)
        return response

    # ------------------------------------------------------------------ SearchEngine's query methods
    def search_text(
        self,
        text: str,
        k: int = 10,
        *,
        labels: Sequence[str] = (),
        hubness: bool = False,
        target: str = "volumes",
    ) -> SearchResult:
        """Text → volumes (or reports)."""
        body = {
            "text": text,
            "k": k,
            "labels": list(labels),
            "hubness": hubness,
            "target": target,
            "index": self.index,
        }
        return _result(self._request("POST", "/search/text", json=body).json())

    def search_report(self, text: str, k: int = 10) -> SearchResult:
        """Report text → similar reports."""
        return _result(self._request("POST", "/search/report", json={"text": text, "k": k, "index": self.index}).json())

    def search_volume(
        self,
        path: str | Path | None = None,
        k: int = 10,
        *,
        target: str = "volumes",
        labels: Sequence[str] = (),
        hubness: bool = False,
        case: str | None = None,
    ) -> SearchResult:
        """A scan file (.nii, .nii.gz, .npy or a zip of a DICOM series), or an indexed ``case`` → similar cases."""
        if (path is None) == (case is None):
            raise errors.QueryError("give either a scan path or case=SCAN_ID")
        if case is not None:
            body = {
                "case": case,
                "k": k,
                "target": target,
                "labels": list(labels),
                "hubness": hubness,
                "index": self.index,
            }
            return _result(self._request("POST", "/search/volume", json=body).json())
        path = Path(path)
        if not path.is_file():
            raise errors.VolumeError("no such file (folders: zip the DICOM series first)", path)
        fields = {"k": str(k), "target": target, "hubness": str(hubness).lower(), "labels": list(labels)}
        if self.index:
            fields["index"] = self.index
        with open(path, "rb") as f:
            return _result(self._request("POST", "/search/volume", files={"file": (path.name, f)}, data=fields).json())

    def info(self) -> dict:
        """Manifest summaries of the server's indexes."""
        return self._request("GET", "/indexes").json()

    # ------------------------------------------------------------------ service extras
    def health(self) -> dict:
        return self._request("GET", "/health").json()

    def case(self, scan_id: str) -> dict:
        return self._request("GET", f"/cases/{scan_id}", params=self._where()).json()

    def slice_png(
        self,
        scan_id: str,
        *,
        axis: str = "axial",
        index: int | None = None,
        window: str = "lung",
        size: int | None = None,
    ) -> bytes:
        params = {"axis": axis, "window": window, **self._where()}
        params.update({key: value for key, value in (("index", index), ("size", size)) if value is not None})
        return self._request("GET", f"/cases/{scan_id}/slice.png", params=params).content

    def generate(
        self, path: str | Path | None = None, *, case: str | None = None, k: int = 5, mode: str = "llm"
    ) -> dict:
        """The draft JSON of ``generate --json`` for a scan file or an indexed case."""
        if (path is None) == (case is None):
            raise errors.QueryError("give either a scan path or case=SCAN_ID")
        if case is not None:
            return self._request(
                "POST", "/generate", json={"case": case, "k": k, "mode": mode, "index": self.index}
            ).json()
        path = Path(path)
        with open(path, "rb") as f:
            data = {"k": str(k), "mode": mode, **({"index": self.index} if self.index else {})}
            return self._request("POST", "/generate", files={"file": (path.name, f)}, data=data).json()

    def _where(self) -> dict:
        return {"index_name": self.index} if self.index else {}
