"""The CMKI bank as a model part: saved and restored, volume forms against numpy, the stored index layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsenet_search.errors import ModelError
from hsenet_search.models import HSENetCLIP, create_model
from hsenet_search.models import bridge as br


def _np_unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_read_out(e, w):
    logits = e @ w.T
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)) @ w


@pytest.fixture(scope="module")
def bridged_model():
    torch.manual_seed(3)
    model = create_model("tiny", bank_size=32).eval()
    with torch.no_grad():  # sharper read-outs than the orthogonal init, so r differs clearly from p
        for stage in model.stages.values():
            stage.bank.weight.mul_(4.0)
    return model


def test_bank_is_saved_recorded_and_restored(tmp_path, bridged_model):
    out = bridged_model.save_pretrained(tmp_path / "m")
    loaded = HSENetCLIP.from_pretrained(out)
    assert loaded.config.bank_size == 32 and loaded.bridged
    assert loaded.describe()["bank_size"] == 32
    for tower in ("stage1", "stage2"):
        torch.testing.assert_close(loaded.bank(tower).weight, bridged_model.bank(tower).weight)
    assert loaded.fingerprint == bridged_model.fingerprint


def test_a_bank_added_to_a_trained_model_round_trips(tmp_path):
    from hsenet_search.models import load_model

    model = load_model()
    plain_fingerprint = model.fingerprint
    assert not model.bridged and "bank_size" not in model.config.to_dict()
    with pytest.raises(ModelError, match="no CMKI knowledge bank"):
        model.bank("stage1")
    model.add_bank(16)
    assert model.fingerprint != plain_fingerprint
    loaded = HSENetCLIP.from_pretrained(model.save_pretrained(tmp_path / "b"))
    assert loaded.config.bank_size == 16
    torch.testing.assert_close(loaded.bank("stage2").weight, model.bank("stage2").weight)
    with pytest.raises(ModelError, match="already has"):
        loaded.add_bank(16)


def test_volume_forms_match_numpy(bridged_model):
    model = bridged_model
    x = torch.rand(3, 1, *model.config.img_size)
    with torch.no_grad():
        raw = {t: model.vision_projected(x, t).double().numpy() for t in ("stage1", "stage2")}
        texts = model.encode_text(["Cardiomegaly.", "No pleural effusion.", "Right nodule."]).double().numpy()
    banks = {t: model.bank(t).weight.detach().double().numpy() for t in raw}
    p = {t: _np_unit(raw[t]) for t in raw}
    r = {t: _np_unit(_np_read_out(raw[t], banks[t])) for t in raw}
    plain = np.concatenate([p["stage1"], p["stage2"]], axis=1) / np.sqrt(2)
    recon = np.concatenate([r["stage1"], r["stage2"]], axis=1) / np.sqrt(2)
    got = {f: model.encode_volume(x, form=f).double().numpy() for f in ("plain", "bridged", "stored")}
    np.testing.assert_allclose(got["plain"], plain, atol=1e-5)
    np.testing.assert_allclose(got["stored"], np.concatenate([plain, recon], axis=1) / np.sqrt(2), atol=1e-5)
    np.testing.assert_allclose(model.encode_volume(x).double().numpy(), got["bridged"], atol=0)  # the default
    # BrgSA's score per tower, ½[cos(img, txt) + cos(bank(img), txt)], averaged over the two fused towers
    t_half = texts.shape[1] // 2
    t1, t2 = _np_unit(texts[:, :t_half]), _np_unit(texts[:, t_half:])
    per_tower = [0.5 * (p[t] @ tt.T + r[t] @ tt.T) for t, tt in (("stage1", t1), ("stage2", t2))]
    score = 0.5 * (per_tower[0] + per_tower[1])
    np.testing.assert_allclose(got["bridged"] @ texts.T, score, atol=1e-5)
    assert np.abs(got["bridged"] @ texts.T - got["plain"] @ texts.T).max() > 1e-3  # the bank matters


def test_stored_layout_answers_every_direction(bridged_model):
    x = torch.rand(4, 1, *bridged_model.config.img_size)
    stored = bridged_model.encode_volume(x, form="stored").numpy()
    plain = bridged_model.encode_volume(x, form="plain").numpy()
    bridged = bridged_model.encode_volume(x, form="bridged").numpy()
    text = bridged_model.encode_text(["Pleural effusion.", "Emphysema."]).numpy()
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(br.plain_of_stored(stored), plain, atol=1e-5)
    np.testing.assert_allclose(br.bridged_of_stored(stored), bridged, atol=1e-5)
    np.testing.assert_allclose(br.text_query_on_stored(text) @ stored.T, text @ bridged.T, atol=1e-5)
    np.testing.assert_allclose(br.volume_query_on_stored(stored) @ stored.T, plain @ plain.T, atol=1e-5)


def test_forms_a_plain_model_lacks_are_refused():
    model = create_model("tiny")
    x = torch.rand(1, 1, *model.config.img_size)
    assert model.encode_volume(x).shape == (1, model.embedding_dim)
    with pytest.raises(ModelError, match="offers plain"):
        model.encode_volume(x, form="bridged")
    with pytest.raises(ModelError, match="bank_size"):
        model.config.replace(bank_size=0)


def test_a_bank_on_an_imported_official_model(tmp_path):
    from test_official_import import IMG, write_official

    from hsenet_search.models import load_model
    from hsenet_search.models.official import import_official

    folder = write_official(tmp_path / "ckpt", "m3d_clip_stage1")
    import_official(folder, tmp_path / "imported")
    model = load_model(tmp_path / "imported")
    torch.manual_seed(0)
    model.add_bank(16)
    reloaded = HSENetCLIP.from_pretrained(model.save_pretrained(tmp_path / "bridged"))
    assert reloaded.config.source.startswith("official") and reloaded.config.bank_size == 16
    x = torch.rand(2, 1, *IMG)
    plain = reloaded.encode_volume(x, form="plain").numpy()
    bridged = reloaded.encode_volume(x).numpy()
    raw = reloaded.vision_projected(x, "stage1").detach().double().numpy()
    w = reloaded.bank("stage1").weight.detach().double().numpy()
    expected = 0.5 * (_np_unit(raw) + _np_unit(_np_read_out(raw, w)))
    np.testing.assert_allclose(bridged, expected, atol=1e-5)
    np.testing.assert_allclose(plain, _np_unit(raw), atol=1e-5)
