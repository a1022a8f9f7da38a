"""Keras configs: Lambda layers and outside modules are flagged, nothing is loaded, HDF5 without h5py is skipped.

Every config is written here by hand in the Keras 3 (``config.json``) or Keras 2 (``model_config``) layout; no
Keras is needed and nothing is ever deserialised beyond JSON.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from dlsec.scan.engine import SCANNERS, Context, ScanLimitError, scan_file
from dlsec.scan.keras import KerasHdf5Scanner, analyze_keras_config, scan_keras_zip
from dlsec.scan.results import Severity

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def dense(name: str, activation: Any = "relu") -> dict[str, Any]:
    return {
        "module": "keras.layers",
        "class_name": "Dense",
        "config": {
            "name": name,
            "units": 4,
            "activation": activation,
            "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
                      "registered_name": None},
            "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                                   "config": {"seed": None}, "registered_name": None},
        },
        "registered_name": None,
        "build_config": {"input_shape": [None, 4]},
    }  # fmt: skip


def sequential(*layers: dict[str, Any]) -> dict[str, Any]:
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "sequential", "layers": [{"module": "keras.layers", "class_name": "InputLayer",
                                                     "config": {"batch_shape": [None, 4]}}, *layers]},
        "registered_name": None,
        "compile_config": {"loss": {"module": "keras.losses", "class_name": "MeanSquaredError", "config": {}}},
    }  # fmt: skip


# Keras 2 stores a lambda's marshalled bytecode in base64; any bytes stand in here (never decoded).
KERAS2_LAMBDA = {
    "class_name": "Lambda",
    "config": {"name": "lambda", "function": [base64.b64encode(b"\xe3\x00fake-bytecode").decode(), None, None],
               "function_type": "lambda", "module": "__main__", "output_shape": None, "arguments": {}},
}  # fmt: skip


def severities(config: Any) -> list[Severity]:
    return [s for _, _, s in analyze_keras_config(config)]


def test_benign_keras3_sequential_is_clean() -> None:
    assert analyze_keras_config(sequential(dense("a"), dense("b", "softmax"))) == []


def test_benign_tf_keras_and_tf_keras_package_are_clean() -> None:
    layer = {"module": "tensorflow.keras.layers", "class_name": "Dense", "config": {}}
    layer2 = {"module": "tf_keras.src.layers", "class_name": "Dense", "config": {}}
    assert analyze_keras_config({"class_name": "Sequential", "config": {"layers": [layer, layer2]}}) == []


def test_keras2_lambda_is_critical() -> None:
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [KERAS2_LAMBDA]}}
    found = analyze_keras_config(config)
    assert any(s is Severity.CRITICAL and "Lambda" in m for _, m, s in found)
    assert any(p == "config.layers[0]" for p, _, _ in found)


def test_keras3_lambda_with_serialised_function_is_critical() -> None:
    lam = {"module": "keras.layers", "class_name": "Lambda",
           "config": {"function": {"class_name": "__lambda__", "config": {"code": "4wAAAA=="}}}}  # fmt: skip
    assert Severity.CRITICAL in severities(sequential(dense("a"), lam))


def test_nested_functional_model_with_lambda_is_critical() -> None:
    inner = {"module": "keras", "class_name": "Functional",
             "config": {"name": "inner", "layers": [{"class_name": "Dense", "config": {}, "module": "keras.layers"},
                                                    KERAS2_LAMBDA]}}  # fmt: skip
    outer = {"module": "keras", "class_name": "Functional",
             "config": {"name": "outer", "layers": [{"class_name": "InputLayer", "config": {}}, inner],
                        "input_layers": [["input", 0, 0]], "output_layers": [["inner", 0, 0]]}}  # fmt: skip
    found = analyze_keras_config(outer)
    assert [(p, s) for p, _, s in found if "Lambda" in _] == [
        ("config.layers[1].config.layers[1]", Severity.CRITICAL)
    ]


def test_os_module_reference_is_critical() -> None:
    evil: dict[str, Any] = {"module": "os", "class_name": "system", "config": {}, "registered_name": None}
    found = analyze_keras_config(sequential(dense("a"), evil))
    assert [s for _, _, s in found] == [Severity.CRITICAL]
    assert "os.system" in found[0][1]


def test_builtins_function_as_activation_is_critical() -> None:
    fn = {"module": "builtins", "class_name": "function", "config": "eval", "registered_name": "function"}
    found = analyze_keras_config(sequential(dense("a", activation=fn)))
    assert [s for _, _, s in found] == [Severity.CRITICAL]
    assert "builtins.eval" in found[0][1]
    assert found[0][0] == "config.layers[1].config.activation"


def test_dangerous_submodule_is_critical() -> None:
    assert severities({"module": "os.path", "class_name": "join", "config": {}}) == [Severity.CRITICAL]
    assert severities({"module": "subprocess", "class_name": "Popen"}) == [Severity.CRITICAL]


def test_custom_module_is_high() -> None:
    custom = {
        "module": "mypkg.layers",
        "class_name": "MyLayer",
        "config": {},
        "registered_name": "mypkg>MyLayer",
    }
    found = analyze_keras_config(sequential(dense("a"), custom))
    assert [s for _, _, s in found] == [Severity.HIGH]
    assert "mypkg.layers" in found[0][1]


def test_custom_registered_name_without_module_is_high() -> None:
    assert severities({"class_name": "MyLayer", "registered_name": "Custom>MyLayer", "config": {}}) == [
        Severity.HIGH
    ]
    assert severities({"class_name": "Dense", "registered_name": "keras>Dense", "config": {}}) == []


def test_keras2_lambda_function_by_module_flags_both() -> None:
    lam = {
        "class_name": "Lambda",
        "config": {"function": "system", "function_type": "function", "module": "os"},
    }
    found = analyze_keras_config({"class_name": "Sequential", "config": {"layers": [lam]}})
    assert sorted(s for _, _, s in found) == [Severity.CRITICAL, Severity.CRITICAL]
    assert any("os.system" in m for _, m, _ in found)


def test_tfoplambda_is_medium() -> None:
    op = {"class_name": "TFOpLambda", "config": {"name": "tf.math.add", "function": "math.add"}}
    assert severities({"class_name": "Functional", "config": {"layers": [op]}}) == [Severity.MEDIUM]


def test_depth_bomb_raises() -> None:
    bomb: Any = []
    for _ in range(1000):
        bomb = [bomb]
    with pytest.raises(ScanLimitError):
        analyze_keras_config({"class_name": "Sequential", "config": {"layers": bomb}})
    deep: Any = {"class_name": "Dense"}
    for _ in range(150):  # under the limit: fine
        deep = {"config": deep}
    assert analyze_keras_config(deep) == []


def keras_zip(config: Any, prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(
            prefix + "metadata.json", json.dumps({"keras_version": "3.4.1", "date_saved": "2024-07-01"})
        )
        zf.writestr(prefix + "config.json", config if isinstance(config, str) else json.dumps(config))
        zf.writestr(prefix + "model.weights.h5", HDF5_MAGIC + b"\x00" * 504)
    return buf.getvalue()


def test_scan_keras_zip_reports_lambda() -> None:
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"layers": [dense("a"), KERAS2_LAMBDA]},
    }
    ctx = Context(path="model.keras")
    with zipfile.ZipFile(io.BytesIO(keras_zip(config))) as zf:
        scan_keras_zip(ctx, zf, "")
    assert ctx.errors == []
    # the Lambda itself, and the HIGH for its function's module "__main__" (looked up on load)
    assert [(f.member, f.severity, f.rule) for f in ctx.findings] == [
        ("config.json", Severity.CRITICAL, "keras-lambda-layer"),
        ("config.json", Severity.HIGH, "keras-custom-module"),
    ]
    assert ctx.findings[0].message.startswith("config.layers[1]: Lambda")
    assert "'__main__'" in ctx.findings[1].message
    assert ctx.findings[0].path == "model.keras"


def test_scan_keras_zip_benign_and_prefix() -> None:
    ctx = Context(path="outer.zip")
    with zipfile.ZipFile(io.BytesIO(keras_zip(sequential(dense("a"))))) as zf:
        scan_keras_zip(ctx, zf, "inner.keras")
    assert (ctx.findings, ctx.errors) == ([], [])
    ctx = Context(path="outer.zip")
    with zipfile.ZipFile(io.BytesIO(keras_zip({"module": "mypkg", "class_name": "Net"}))) as zf:
        scan_keras_zip(ctx, zf, "inner.keras")
    assert [(f.member, f.severity) for f in ctx.findings] == [("inner.keras/config.json", Severity.HIGH)]


@pytest.mark.parametrize(
    "bad", ["{not json", '"a string"', json.dumps([[[[0]]]]).replace("0", "[" * 300 + "]" * 300)]
)
def test_scan_keras_zip_bad_config_is_an_error(bad: str) -> None:
    ctx = Context(path="model.keras")
    with zipfile.ZipFile(io.BytesIO(keras_zip(bad))) as zf:
        scan_keras_zip(ctx, zf, "")
    assert ctx.findings == []
    assert [e.member for e in ctx.errors] == ["config.json"]


def test_scan_keras_zip_without_config_is_an_error() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("metadata.json", "{}")
    ctx = Context(path="model.keras")
    with zipfile.ZipFile(buf) as zf:
        scan_keras_zip(ctx, zf, "")
    assert len(ctx.errors) == 1


def test_hdf5_scanner_registered() -> None:
    assert isinstance(SCANNERS["hdf5"], KerasHdf5Scanner)


def test_hdf5_without_h5py_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)  # an import of h5py now fails, installed or not
    p = tmp_path / "model.h5"
    p.write_bytes(HDF5_MAGIC + b"\x00" * 1024)
    ctx = scan_file(str(p))
    assert (ctx.findings, ctx.errors) == ([], [])
    assert [s.reason for s in ctx.skipped] == ["HDF5 needs h5py (pip install h5py): not scanned"]


# --- with h5py (skipped where it is not installed) ---------------------------------------------------------------


def write_h5(path: Path, attrs: dict[str, Any]) -> None:
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as h5:
        h5.create_dataset("dense/kernel", data=[[1.0, 2.0]])
        for k, v in attrs.items():
            h5.attrs[k] = v


def test_h5_keras2_lambda_is_critical(tmp_path: Path) -> None:
    p = tmp_path / "model.h5"
    config = {"class_name": "Sequential", "config": {"layers": [KERAS2_LAMBDA]}}
    training = {"loss": {"class_name": "function", "module": "os", "config": "system"}}
    write_h5(p, {"model_config": json.dumps(config).encode(), "training_config": json.dumps(training)})
    ctx = scan_file(str(p))
    assert ctx.errors == [] and ctx.skipped == []
    assert sorted((f.rule, f.severity) for f in ctx.findings) == [
        ("keras-custom-module", Severity.HIGH), ("keras-dangerous-module", Severity.CRITICAL),
        ("keras-lambda-layer", Severity.CRITICAL),
    ]  # fmt: skip
    assert any(f.message.startswith("model_config.config.layers[0]") for f in ctx.findings)
    assert any(f.message.startswith("training_config.loss") for f in ctx.findings)


def test_h5_weights_only_and_benign_are_clean(tmp_path: Path) -> None:
    p = tmp_path / "weights.h5"
    write_h5(p, {"layer_names": [b"dense"]})
    ctx = scan_file(str(p))
    assert (ctx.findings, ctx.errors, ctx.skipped) == ([], [], [])
    p2 = tmp_path / "benign.h5"
    write_h5(p2, {"model_config": json.dumps(sequential(dense("a")))})
    ctx = scan_file(str(p2))
    assert (ctx.findings, ctx.errors, ctx.skipped) == ([], [], [])


def test_h5_inside_a_zip_member(tmp_path: Path) -> None:
    h5 = tmp_path / "m.h5"
    write_h5(
        h5, {"model_config": json.dumps({"class_name": "Sequential", "config": {"layers": [KERAS2_LAMBDA]}})}
    )
    p = tmp_path / "bundle.zip"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(h5, "models/m.h5")
    ctx = scan_file(str(p))
    assert ctx.errors == []
    assert [(f.member, f.severity) for f in ctx.findings] == [
        ("models/m.h5", Severity.CRITICAL),
        ("models/m.h5", Severity.HIGH),
    ]


def test_h5_garbage_is_an_error(tmp_path: Path) -> None:
    pytest.importorskip("h5py")
    p = tmp_path / "bad.h5"
    p.write_bytes(HDF5_MAGIC + b"\xff" * 2048)
    ctx = scan_file(str(p))
    assert ctx.findings == [] and len(ctx.errors) == 1


def test_clean_keras_archive_scans_clean_end_to_end(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import zipfile

    from dlsec.scan import Severity, scan_path

    config = {"module": "keras", "class_name": "Sequential", "config": {"layers": [
        {"module": "keras.layers", "class_name": "Dense", "config": {"units": 2}},
        {"module": "keras_hub.layers", "class_name": "TransformerEncoder", "config": {}}]}}  # fmt: skip
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("metadata.json", "{}")
        zf.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    report = scan_path(str(path))
    assert report.findings == () and report.errors == () and report.exit_code(Severity.LOW) == 0
    config["config"]["layers"].append({"class_name": "Lambda", "config": {"function": ["AAAA", None, None]}})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("metadata.json", "{}")
        zf.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    assert scan_path(str(path)).exit_code(Severity.HIGH) == 1
