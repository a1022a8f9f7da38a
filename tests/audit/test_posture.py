"""Posture checks: torch's weights_only default, keras safe_mode, environment variables."""

from __future__ import annotations

from dlsec.audit.inventory import Package
from dlsec.audit.posture import check_environment, check_packages
from dlsec.scan.results import Severity


def ids(findings) -> list[str]:
    return [f.id for f in findings]


def test_torch_weights_only_default() -> None:
    assert ids(check_packages([Package("torch", "2.5.1+cu121", "x")])) == ["DLSEC-AUDIT-P001"]
    assert ids(check_packages([Package("torch", "2.6.0rc1", "x")])) == ["DLSEC-AUDIT-P001"]
    assert ids(check_packages([Package("torch", "2.6.0+cpu", "x")])) == []


def test_keras_safe_mode() -> None:
    f = check_packages([Package("keras", "3.10.0", "x")])
    assert ids(f) == ["DLSEC-AUDIT-P003"] and f[0].severity is Severity.HIGH and "3.11.3" in f[0].fix
    assert (
        ids(check_packages([Package("keras", "2.15.0", "x")])) == []
    )  # keras 2 has no safe_mode bypass here
    assert ids(check_packages([Package("keras", "3.11.2", "x")])) == ["DLSEC-AUDIT-P003"]
    assert ids(check_packages([Package("keras", "3.11.3", "x")])) == []


def test_environment_variables() -> None:
    assert ids(check_environment({"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "True"})) == ["DLSEC-AUDIT-P002"]
    assert (
        ids(
            check_environment({"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "0", "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"})
        )
        == []
    )
    assert ids(check_environment({"HF_DATASETS_TRUST_REMOTE_CODE": "ON"})) == ["DLSEC-AUDIT-P004"]
    assert ids(check_environment({"HF_DATASETS_TRUST_REMOTE_CODE": "0"})) == []
    assert ids(check_environment({})) == []
