"""Loading models: every accepted form round-trips; nothing on the way unpickles arbitrary objects."""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dlsec.errors import ModelError
from dlsec.models import DEMO_MODELS, check_classifier, load_demo, load_model, load_weights
from tests.conftest import TinyCNN


class _Payload:
    """Harmless stand-in for a code-execution payload: unpickling it creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _payload_bytes(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save(_Payload(marker), buf)
    return buf.getvalue()


def _export(model: torch.nn.Module, path: Path) -> Path:
    ep = torch.export.export(model, (torch.rand(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, str(path))
    return path


def _rewrite(src: Path, dst: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info, data)
    return dst


def test_pt2_round_trip_with_dynamic_batch(tiny_model, small_batch, tmp_path: Path) -> None:
    path = _export(tiny_model, tmp_path / "m.pt2")
    loaded = load_model(str(path))
    x = small_batch[0]
    assert torch.allclose(loaded(x), tiny_model(x), atol=1e-5)
    assert check_classifier(loaded, x) == 10


def test_pt2_with_pickled_weight_is_refused(tiny_model, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    src = _export(tiny_model, tmp_path / "m.pt2")

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("weights_config.json"):
            cfg = json.loads(data)
            first = next(iter(cfg["config"].values()))
            first["use_pickle"] = True
            return json.dumps(cfg).encode()
        if name.endswith("weights/weight_0"):
            return _payload_bytes(marker)
        return data

    bad = _rewrite(src, tmp_path / "bad.pt2", edit)
    with pytest.raises(ModelError, match="pickle"):
        load_model(str(bad))
    assert not marker.exists()


def test_pt2_with_custom_object_constant_is_refused(tiny_model, tmp_path: Path) -> None:
    src = _export(tiny_model, tmp_path / "m.pt2")

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("constants_config.json"):
            return json.dumps({"config": {"obj": {"path_name": "opaque_obj_0", "use_pickle": False}}}).encode()
        return data

    with pytest.raises(ModelError, match="custom object"):
        load_model(str(_rewrite(src, tmp_path / "bad.pt2", edit)))


def test_pt2_pickled_sample_inputs_never_unpickled(tiny_model, tmp_path: Path) -> None:
    """torch.export.load retries sample inputs with weights_only=False; dlsec forces weights_only."""
    marker = tmp_path / "pwned"
    src = _export(tiny_model, tmp_path / "m.pt2")

    def edit(name: str, data: bytes) -> bytes:
        return _payload_bytes(marker) if "sample_inputs" in name else data

    bad = _rewrite(src, tmp_path / "bad.pt2", edit)
    with contextlib.suppress(ModelError):  # refusing is fine; unpickling the payload is not
        load_model(str(bad))
    assert not marker.exists()


def test_pt2_with_native_code_refused(tiny_model, tmp_path: Path) -> None:
    src = _export(tiny_model, tmp_path / "m.pt2")
    with zipfile.ZipFile(src, "a") as zf:
        zf.writestr("m/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(ModelError, match="native code"):
        load_model(str(src))


def test_not_a_zip_pt2(tmp_path: Path) -> None:
    p = tmp_path / "x.pt2"
    p.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="not a torch.export archive"):
        load_model(str(p))


def test_torchscript_round_trip(tiny_model, small_batch, tmp_path: Path) -> None:
    path = tmp_path / "m.ts"
    torch.jit.save(torch.jit.script(tiny_model), str(path))
    loaded = load_model(str(path))
    assert torch.allclose(loaded(small_batch[0]), tiny_model(small_batch[0]), atol=1e-5)


def test_pickled_whole_model_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    path.write_bytes(_payload_bytes(marker))
    with pytest.raises(ModelError, match="never unpickles"):
        load_model(str(path))
    assert not marker.exists()


def test_factory_with_safetensors_and_torch_weights(tiny_model, small_batch, tmp_path: Path) -> None:
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(st))
    pt = tmp_path / "w.pt"
    torch.save(tiny_model.state_dict(), pt)
    for weights in (st, pt):
        m = load_model("tests.models.factories:tiny", weights)
        assert torch.allclose(m(small_batch[0]), tiny_model(small_batch[0]), atol=1e-6)
        assert not m.training


def test_torch_weights_with_payload_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    pt = tmp_path / "w.pt"
    pt.write_bytes(_payload_bytes(marker))
    with pytest.raises(ModelError, match="cannot read weights"):
        load_weights(pt)
    assert not marker.exists()


@pytest.mark.parametrize(
    "spec, match",
    [
        ("tests.models.factories:missing", "not a callable"),
        ("tests.models.factories:not_a_module", "did not return a torch.nn.Module"),
        ("no_such_package_xyz.mod:f", "cannot import"),
        ("missing.pt2", "not found"),
        ("model.onnx", "unrecognised"),
    ],
)
def test_bad_specs(spec: str, match: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if spec == "model.onnx":
        monkeypatch.chdir(tmp_path)
        (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ModelError, match=match):
        load_model(spec)


def test_weights_that_do_not_fit(tmp_path: Path) -> None:
    st = tmp_path / "w.safetensors"
    save_file({"foo": torch.zeros(3)}, str(st))
    with pytest.raises(ModelError, match="do not fit"):
        load_model("tests.models.factories:tiny", st)


def test_not_a_classifier(small_batch) -> None:
    m = load_model("tests.models.factories:not_a_classifier")
    with pytest.raises(ModelError, match="not a classifier"):
        check_classifier(m, small_batch[0])


def test_wrong_input_shape_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="failed on inputs"):
        check_classifier(TinyCNN(), torch.rand(2, 3, 32, 32))


@pytest.mark.parametrize("name", list(DEMO_MODELS))
def test_demo_models_ship_and_classify(name: str, digits_test) -> None:
    model = load_demo(name)
    with torch.no_grad():
        acc = (model(digits_test.x).argmax(1) == digits_test.y).float().mean()
    assert acc > 0.95
    assert load_model(f"demo:{name}").state_dict().keys() == model.state_dict().keys()
