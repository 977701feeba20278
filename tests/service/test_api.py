"""The HTTP API through FastAPI's TestClient: every endpoint and its error paths."""

from __future__ import annotations

import gzip
import io
import struct
import threading
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hsenet_search.data.labels import LABELS
from hsenet_search.engine import SearchEngine

from .conftest import TOKEN

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def one_line_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"detail", "type"}
    assert body["detail"] and "\n" not in body["detail"] and "Traceback" not in body["detail"]
    return body["detail"]


def first_scan(loaded) -> str:
    return str(loaded["small"].engine.metadata["scan_id"].iloc[0])


# ---------------------------------------------------------------------------------------------- system
def test_health_indexes_and_docs(client, loaded):
    assert client.get("/health").json()["status"] == "ready"
    (info,) = client.get("/indexes").json()["indexes"]
    manifest = loaded["small"].engine.manifest
    assert info["name"] == "small" and info["counts"] == manifest.counts
    assert info["model_fingerprint"] == manifest.model_fingerprint
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/search/text",
        "/search/report",
        "/search/volume",
        "/cases/{scan_id}",
        "/cases/{scan_id}/slice.png",
        "/generate",
        "/health",
        "/indexes",
        "/metrics",
    ):
        assert path in paths
    for path, fields in (
        ("/search/volume", {"k", "target", "labels", "hubness", "index"}),
        ("/generate", {"k", "mode", "index"}),
    ):
        form = paths[path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert form["required"] == ["file"] and set(form["properties"]) == {"file", *fields}
    modes = paths["/generate"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["mode"]
    assert modes["enum"] == ["llm", "grounded", "nearest", "vote"]


def test_health_is_not_ready_without_indexes(loaded):
    from fastapi.testclient import TestClient

    from hsenet_search.service import ServiceConfig, create_app
    from hsenet_search.service.state import ServiceState

    config = ServiceConfig()
    app = create_app(config, ServiceState(config, {}))
    response = TestClient(app).get("/health")
    assert response.status_code == 503 and response.json()["status"] == "loading"


def test_metrics_count_requests_and_work(client):
    client.post("/search/text", json={"text": "Right pleural effusion.", "k": 2})
    client.get("/cases/nope-not-a-scan")
    text = client.get("/metrics").text
    assert 'hsenet_requests_total{endpoint="/search/text",method="POST",status="200"} 1.0' in text
    assert 'hsenet_requests_total{endpoint="/cases/{scan_id}",method="GET",status="404"} 1.0' in text
    assert 'hsenet_request_seconds_count{endpoint="/search/text"} 1.0' in text
    assert 'hsenet_work_seconds_count{stage="encode_text"} 1.0' in text
    assert 'hsenet_work_seconds_count{stage="faiss"} 1.0' in text


# ---------------------------------------------------------------------------------------------- search
def test_search_text_matches_the_engine(client, loaded):
    engine: SearchEngine = loaded["small"].engine
    query = "Moderate right pleural effusion with adjacent atelectasis."
    expected = engine.search_text(query, 4)
    body = client.post("/search/text", json={"text": query, "k": 4}).json()
    assert body["query"] == query and body["target"] == "volumes" and body["index"] == "small"
    assert [h["scan_id"] for h in body["hits"]] == [h.scan_id for h in expected.hits]
    assert [h["score"] for h in body["hits"]] == pytest.approx([h.score for h in expected.hits], abs=1e-5)
    first = {key: value for key, value in expected.hits[0].to_json().items() if key != "score"}
    assert {key: value for key, value in body["hits"][0].items() if key != "score"} == first


def test_search_text_label_filter_and_reports_target(client, loaded):
    meta = loaded["small"].engine.metadata
    label = next(name for name in LABELS if 0 < int((meta[name] == 1).sum()) < len(meta))
    hits = client.post("/search/text", json={"text": "Lung findings.", "k": 10, "labels": [label]}).json()["hits"]
    assert hits and all(label in h["labels"] for h in hits)
    assert len(hits) == meta.loc[meta[label] == 1, "scan_id"].nunique()
    reports = client.post("/search/text", json={"text": "Lung findings.", "k": 3, "target": "reports"}).json()
    assert reports["target"] == "reports" and all(h["volumes"] for h in reports["hits"])


def test_search_report(client, loaded):
    engine = loaded["small"].engine
    text = f"{engine.metadata['findings'].iloc[0]} {engine.metadata['impression'].iloc[0]}"
    body = client.post("/search/report", json={"text": text, "k": 3}).json()
    assert body["target"] == "reports"
    assert [h["report_id"] for h in body["hits"]] == [h.report_id for h in engine.search_report(text, 3).hits]


def test_more_like_this_leaves_the_case_out(client, loaded):
    engine = loaded["small"].engine
    scan = first_scan(loaded)
    body = client.post("/search/volume", json={"case": scan, "k": 3}).json()
    assert body["query"] == {"case": scan}
    ids = [h["scan_id"] for h in body["hits"]]
    assert len(ids) == 3 and scan not in ids and [h["rank"] for h in body["hits"]] == [1, 2, 3]
    vector = engine.volumes.reconstruct(int(loaded["small"].rows(scan)[0]))
    expected = [h.scan_id for h in engine.search_embedding(vector, 4).hits if h.scan_id != scan][:3]
    assert ids == expected


def test_upload_nifti_gz_matches_engine(client, loaded, scan_files, tmp_path):
    engine = loaded["small"].engine
    path = tmp_path / "scan.nii.gz"  # outside its dataset: no CT-RATE metadata rescale, like an upload
    path.write_bytes(scan_files["nii.gz"].read_bytes())
    expected = engine.search_volume(path, 3)
    with open(path, "rb") as f:
        response = client.post("/search/volume", files={"file": ("scan.nii.gz", f)}, data={"k": "3"})
    body = response.json()
    assert response.status_code == 200 and body["query"] == {"upload": "scan.nii.gz"}
    assert [h["scan_id"] for h in body["hits"]] == [h.scan_id for h in expected.hits]
    assert [h["score"] for h in body["hits"]] == pytest.approx([h.score for h in expected.hits], abs=1e-4)


def test_upload_plain_nifti_npy_and_reports_target(client, scan_files, tmp_path):
    image = nib.load(scan_files["nii.gz"])
    plain = tmp_path / "scan.nii"
    nib.save(image, plain)
    with open(plain, "rb") as f:
        nii = client.post(
            "/search/volume", files={"file": ("scan.nii", f)}, data={"k": "2", "target": "reports"}
        ).json()
    assert nii["target"] == "reports" and len(nii["hits"]) == 2
    npy = tmp_path / "scan.npy"
    np.save(npy, np.asarray(image.dataobj, dtype=np.float32))
    with open(npy, "rb") as f:
        response = client.post("/search/volume", files={"file": ("scan.npy", f)}, data={"k": "2"})
    assert response.status_code == 200 and len(response.json()["hits"]) == 2


def test_upload_zip_of_dicom_series(client, real_ct_dicom, tmp_path):
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i, path in enumerate(sorted(real_ct_dicom.iterdir())):
            z.write(path, f"../../evil/{i}/{path.name}")  # member names are never used as paths
    with open(archive, "rb") as f:
        response = client.post("/search/volume", files={"file": ("series.zip", f)}, data={"k": "2"})
    assert response.status_code == 200, response.text
    assert len(response.json()["hits"]) == 2
    assert not (tmp_path.parent / "evil").exists()


# ---------------------------------------------------------------------------------------------- cases
def test_case_and_slices_at_true_aspect(client, loaded):
    scan = first_scan(loaded)
    case = client.get(f"/cases/{scan}").json()
    meta = loaded["small"].engine.metadata
    row = meta[meta["scan_id"] == scan].iloc[0]
    assert case["findings"] == row["findings"] and case["impression"] == row["impression"]
    assert case["labels"] == [name for name in LABELS if row[name] == 1]
    view = case["volumes"][0]
    sx, sy, sz = view["spacing"]
    counts = view["slices"]
    expected = {
        "axial": (counts["sagittal"] * sx, counts["coronal"] * sy),
        "coronal": (counts["sagittal"] * sx, counts["axial"] * sz),
        "sagittal": (counts["coronal"] * sy, counts["axial"] * sz),
    }
    for axis, (width_mm, height_mm) in expected.items():
        response = client.get(f"/cases/{scan}/slice.png", params={"axis": axis, "window": "mediastinum"})
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        width, height = png_size(response.content)
        assert width / height == pytest.approx(width_mm / height_mm, rel=0.03)
    first = client.get(f"/cases/{scan}/slice.png", params={"index": 0, "window": "bone"}).content
    middle = client.get(f"/cases/{scan}/slice.png", params={"window": "bone"}).content
    lung = client.get(f"/cases/{scan}/slice.png", params={"window": "lung"}).content
    assert len({first, middle, lung}) == 3
    thumb = client.get(f"/cases/{scan}/slice.png", params={"size": 32}).content
    assert max(png_size(thumb)) == 32


def test_slice_render_is_cached(client, loaded):
    scan = first_scan(loaded)
    for _ in range(3):
        assert client.get(f"/cases/{scan}/slice.png", params={"axis": "coronal"}).status_code == 200
    assert 'hsenet_work_seconds_count{stage="render"} 1.0' in client.get("/metrics").text


def test_slice_pixels_follow_the_window(client, loaded):
    from PIL import Image

    from hsenet_search.service.render import WINDOWS, display_volume

    loaded_index = loaded["small"]
    scan = first_scan(loaded)
    volume = display_volume(loaded_index.path_of(int(loaded_index.rows(scan)[0])))
    k = volume.slices["axial"] // 2
    level, width = WINDOWS["mediastinum"]
    reference = np.clip((volume.array[:, :, k].T - (level - width / 2)) / width * 255, 0, 255).astype(np.uint8)
    png = client.get(f"/cases/{scan}/slice.png", params={"window": "mediastinum", "index": k}).content
    image = np.asarray(Image.open(io.BytesIO(png)))
    if image.shape == reference.shape:  # square voxels in-plane: no resampling, exact pixels
        assert np.array_equal(image, reference)
    else:
        assert abs(float(image.mean()) - float(reference.mean())) < 3


# ---------------------------------------------------------------------------------------------- generate
def test_generate_from_case_and_upload(client, loaded, scan_files):
    scan = first_scan(loaded)
    draft = client.post("/generate", json={"case": scan, "k": 3, "mode": "vote"}).json()
    assert draft["mode"] == "vote" and draft["findings"] and scan not in draft["retrieved"]
    assert len(draft["retrieved"]) == 3
    with open(scan_files["nii.gz"], "rb") as f:
        nearest = client.post("/generate", files={"file": ("x.nii.gz", f)}, data={"k": "2", "mode": "nearest"})
    assert nearest.status_code == 200 and nearest.json()["mode"] == "nearest"
    assert nearest.json()["findings"]


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"text": "", "k": 3}, 422, "text"),
        ({"text": "x", "k": 0}, 422, "k"),
        ({"text": "x", "k": 5000}, 422, "k"),
        ({"text": "x", "k": 999}, 400, "k must be between"),
        ({"text": "x", "labels": ["Not a label"]}, 400, "unknown label"),
        ({"text": "x", "target": "images"}, 422, "target"),
        ({"text": "x", "index": "other"}, 404, "no index named"),
        ({"text": "x", "index": "../small"}, 400, "not a valid identifier"),
        ({"text": "x", "unexpected": 1}, 422, "unexpected"),
    ],
)
def test_search_text_errors(client, body, status, words):
    assert words in one_line_error(client.post("/search/text", json=body), status)


def test_hubness_uses_the_index_querybank(client, loaded):
    engine = loaded["small"].engine
    assert "text_to_volumes" in engine.hubness
    body = client.post("/search/text", json={"text": "Cardiomegaly.", "k": 3, "hubness": True}).json()
    expected = engine.search_text("Cardiomegaly.", 3, hubness=True)
    assert [h["scan_id"] for h in body["hits"]] == [h.scan_id for h in expected.hits]


def test_malformed_and_wrong_type_bodies(client):
    assert "not valid JSON" in one_line_error(
        client.post("/search/volume", content=b"{nope", headers={"content-type": "application/json"}), 400
    )
    one_line_error(client.post("/search/text", content=b"[1, 2]", headers={"content-type": "application/json"}), 422)
    one_line_error(client.post("/search/text", content=b"\xff\xfe", headers={"content-type": "application/json"}), 422)
    one_line_error(client.get("/no/such/route"), 404)
    one_line_error(client.delete("/search/text"), 405)


@pytest.mark.parametrize(
    "path",
    [
        "/cases/..%2F..%2Fetc%2Fpasswd",
        "/cases/%2Fetc%2Fpasswd/slice.png",
        "/cases/../../etc/passwd",
        "/cases/a%00b",
        "/cases/train_1_a%2F..%2F..",
        "/cases/%2E%2E/slice.png",
    ],
)
def test_traversal_attempts_in_ids_never_touch_files(client, path):
    response = client.get(path)
    assert response.status_code in (400, 404, 422), response.text
    assert b"root:" not in response.content
    assert response.json()["detail"]


def test_traversal_in_volume_and_index_params(client, loaded):
    scan = first_scan(loaded)
    for params in ({"volume": "../../etc/passwd"}, {"volume": "/etc/passwd"}, {"index_name": "../x"}):
        response = client.get(f"/cases/{scan}/slice.png", params=params)
        assert response.status_code == 400 and b"root:" not in response.content
    one_line_error(client.post("/search/volume", json={"case": "../../etc/passwd"}), 400)
    one_line_error(client.post("/search/volume", json={"case": "not_a_scan"}), 404)
    one_line_error(client.post("/generate", json={"case": "missing_scan", "mode": "vote"}), 404)


def test_slice_parameter_errors(client, loaded):
    scan = first_scan(loaded)
    assert "axis" in one_line_error(client.get(f"/cases/{scan}/slice.png", params={"axis": "oblique"}), 422)
    assert "window" in one_line_error(client.get(f"/cases/{scan}/slice.png", params={"window": "brain"}), 422)
    assert "outside" in one_line_error(client.get(f"/cases/{scan}/slice.png", params={"index": 9999}), 400)
    assert "no volume" in one_line_error(client.get(f"/cases/{scan}/slice.png", params={"volume": "x.nii.gz"}), 404)
    one_line_error(client.get(f"/cases/{scan}/slice.png", params={"size": 4}), 422)


def test_bad_uploads(client, tmp_path):
    def post(name: str, data: bytes, field: str = "file"):
        return client.post("/search/volume", files={field: (name, data)})

    assert "unsupported upload type" in one_line_error(post("scan.exe", b"MZ"), 422)
    assert "gzip" in one_line_error(post("scan.nii.gz", b"not gzip at all"), 422)
    assert "truncated" in one_line_error(
        post("scan.nii.gz", gzip.compress(np.random.default_rng(0).bytes(5000))[:200]), 422
    )
    one_line_error(post("scan.nii", b"\x00" * 400), 422)
    one_line_error(post("scan.npy", b"\x93NUMPY garbage"), 422)
    assert "empty" in one_line_error(post("scan.npy", b""), 422)
    assert "zip" in one_line_error(post("series.zip", b"PK\x03\x04 broken"), 422)
    assert "field 'file'" in one_line_error(post("scan.nii.gz", b"x", field="upload"), 422)
    two_d = io.BytesIO()
    np.save(two_d, np.zeros((16, 16), dtype=np.float32))
    one_line_error(post("flat.npy", two_d.getvalue()), 422)
    assert "k" in one_line_error(
        client.post("/search/volume", files={"file": ("a.npy", b"x")}, data={"k": "many"}), 422
    )


def test_decompression_bombs(make_client):
    client = make_client(max_unpacked_bytes=1 << 20, max_zip_members=50)
    bomb = gzip.compress(b"\x00" * (8 << 20), compresslevel=9)
    assert len(bomb) < 20_000
    assert "decompresses to more than" in one_line_error(
        client.post("/search/volume", files={"file": ("bomb.nii.gz", bomb)}), 422
    )
    big = io.BytesIO()
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.dcm", b"\x00" * (4 << 20))
    assert "unpacks to more than" in one_line_error(
        client.post("/search/volume", files={"file": ("bomb.zip", big.getvalue())}), 422
    )
    many = io.BytesIO()
    with zipfile.ZipFile(many, "w") as z:
        for i in range(60):
            z.writestr(f"{i}.dcm", b"x")
    assert "60 files" in one_line_error(client.post("/search/volume", files={"file": ("m.zip", many.getvalue())}), 422)


def test_oversize_bodies_answer_413(make_client):
    client = make_client(max_upload_bytes=64 << 10, max_json_bytes=4 << 10)
    response = client.post("/search/volume", files={"file": ("big.npy", b"\x00" * (100 << 10))})
    assert "over the limit" in one_line_error(response, 413)
    assert "over the limit" in one_line_error(client.post("/search/text", json={"text": "x" * 8000}), 413)

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        for _ in range(10):
            yield b"x" * 1024

    streamed = client.post("/search/text", content=chunks(), headers={"content-type": "application/json"})
    assert "over the limit" in one_line_error(streamed, 413)


def test_token_required_when_configured(make_client):
    client = make_client(token=TOKEN)
    assert "missing bearer token" in one_line_error(client.post("/search/text", json={"text": "x"}), 401)
    wrong = client.post("/search/text", json={"text": "x"}, headers={"Authorization": "Bearer " + "w" * 27})
    assert "wrong bearer token" in one_line_error(wrong, 401)
    assert wrong.headers["www-authenticate"] == "Bearer"
    basic = client.get("/indexes", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    one_line_error(basic, 401)
    for path in ("/indexes", "/metrics", "/cases/x", "/cases/x/slice.png"):
        one_line_error(client.get(path), 401)
    one_line_error(client.post("/generate", json={"case": "x"}), 401)
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/search/text", json={"text": "Cardiomegaly.", "k": 1}, headers=good).status_code == 200
    assert client.get("/health").status_code == 200 and client.get("/").status_code == 200


def test_full_pool_answers_503_with_retry_after(make_client):
    client = make_client(workers=1, queue=0)
    release, started = threading.Event(), threading.Event()

    def block():
        started.set()
        release.wait(30)

    worker = threading.Thread(target=_occupy, args=(client, block))
    worker.start()
    try:
        assert started.wait(30)
        response = client.post("/search/text", json={"text": "Cardiomegaly.", "k": 1})
        assert "busy" in one_line_error(response, 503)
        assert response.headers["retry-after"] == "1"
        assert "hsenet_rejected_total 1.0" in client.get("/metrics").text
    finally:
        release.set()
        worker.join(30)
    assert client.post("/search/text", json={"text": "Cardiomegaly.", "k": 1}).status_code == 200


def _occupy(client, fn) -> None:
    import asyncio

    asyncio.run(client.service.pool.run(fn))


def test_slow_job_answers_503_not_500(make_client):
    client = make_client(job_timeout_s=0.2)
    release = threading.Event()
    state = client.service
    real = state.search_text

    def slow(*args):
        release.wait(10)
        return real(*args)

    state.search_text = slow
    try:
        response = client.post("/search/text", json={"text": "Cardiomegaly.", "k": 1})
        assert "longer than" in one_line_error(response, 503)
    finally:
        release.set()


def test_unexpected_errors_are_logged_and_never_500(make_client, caplog):
    client = make_client()

    def broken(*_args):
        raise RuntimeError("simulated fault inside the worker")

    client.service.search_text = broken
    response = client.post("/search/text", json={"text": "x"})
    detail = one_line_error(response, 503)
    assert "RuntimeError" in detail and "simulated" not in detail
    assert "simulated fault inside the worker" in caplog.text


def test_missing_volume_file_is_a_clean_error(make_client, loaded, tmp_path):
    """A recorded volume path that vanished is a typed 422, not a server error."""
    from hsenet_search.service import ServiceConfig, create_app
    from hsenet_search.service.state import LoadedIndex, ServiceState

    original = loaded["small"]
    meta = original.engine.metadata.copy()
    meta["path"] = str(tmp_path / "gone.nii.gz")
    engine = SearchEngine(
        original.engine.index_dir,
        original.engine.manifest,
        original.engine.model,
        original.engine.volumes,
        original.engine.reports,
        meta,
        original.engine.hubness,
    )
    config = ServiceConfig()
    state = ServiceState(config, {"small": LoadedIndex("small", engine, original.rows_by_scan)})
    from fastapi.testclient import TestClient

    client = TestClient(create_app(config, state), raise_server_exceptions=False)
    scan = first_scan(loaded)
    assert "no such file" in one_line_error(client.get(f"/cases/{scan}/slice.png"), 422)


def test_cors_off_by_default_and_opt_in(make_client):
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    plain = make_client()
    assert "access-control-allow-origin" not in plain.options("/search/text", headers=preflight).headers
    allowed = make_client(cors_origins=["http://viewer.example"])
    response = allowed.options("/search/text", headers={**preflight, "Origin": "http://viewer.example"})
    assert response.headers["access-control-allow-origin"] == "http://viewer.example"


def test_static_page_and_files(client):
    page = client.get("/")
    assert page.status_code == 200 and b'id="search-form"' in page.content
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "api.js", "highlight.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    one_line_error(client.get("/static/..%2F__init__.py"), 404)
    one_line_error(client.get("/static/missing.js"), 404)


def test_upload_temp_folders_are_removed(client, scan_files, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with open(scan_files["nii.gz"], "rb") as f:
        assert client.post("/search/volume", files={"file": ("s.nii.gz", f)}, data={"k": "1"}).status_code == 200
    client.post("/search/volume", files={"file": ("bad.nii.gz", b"junk")})
    assert list(Path(tmp_path).glob("hsenet-upload-*")) == []
