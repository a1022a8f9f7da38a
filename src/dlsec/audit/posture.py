"""Posture checks beyond advisories: unsafe defaults of installed versions and environment settings.

Each check has a stable id (``DLSEC-AUDIT-P00x``), a severity and a fix. Environment checks read the mapping they
are given (``os.environ`` for the running environment) and are skipped for requirements and lock files.

- P001 torch older than 2.6.0: ``torch.load`` defaults to ``weights_only=False`` (full pickle, code execution on
  load); 2.6.0 made ``weights_only=True`` the default.
- P002 ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` set: torch (2.4+) then forces ``weights_only=False`` on every
  ``torch.load`` call that does not pass ``weights_only`` explicitly (torch's own truth values: 1, y, yes, true).
- P003 keras 3 before 3.11.3: ``safe_mode=True`` of ``load_model`` can be bypassed (CVE-2025-1550, fixed in
  3.9.0; CVE-2025-8747, fixed in 3.11.0; CVE-2025-9905, .h5 files, fixed in 3.11.3).
  ``keras.config.enable_unsafe_deserialization()`` is a call inside a
  program and cannot be seen from outside: not checked.
- P004 ``HF_DATASETS_TRUST_REMOTE_CODE`` set true: Hugging Face ``datasets`` then runs dataset loading scripts
  from the Hub without being asked per call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from packaging.version import Version

from dlsec.audit.inventory import Package
from dlsec.audit.results import PostureFinding
from dlsec.scan.results import Severity

TORCH_WEIGHTS_ONLY_DEFAULT = Version("2.6.0")
KERAS_SAFE_MODE_FIXED = Version("3.11.3")
_TORCH_TRUE = ("1", "y", "yes", "true")
_HF_TRUE = ("1", "on", "yes", "true")


def check_packages(packages: Sequence[Package]) -> list[PostureFinding]:
    """Version-based posture findings for the given packages."""
    out: list[PostureFinding] = []
    by_name = {p.name: p for p in packages}
    torch = by_name.get("torch")
    if torch is not None and Version(torch.public) < TORCH_WEIGHTS_ONLY_DEFAULT:
        out.append(
            PostureFinding(
                "DLSEC-AUDIT-P001",
                Severity.MEDIUM,
                "torch.load defaults to full pickle",
                f"torch {torch.version} is older than 2.6.0: torch.load(path) without weights_only runs any "
                "pickle, so loading an untrusted checkpoint can execute code",
                "upgrade to torch>=2.6.0 (weights_only=True by default) and pass weights_only=True explicitly",
                torch.name,
                torch.version,
            )
        )
    keras = by_name.get("keras")
    if keras is not None and Version("3") <= Version(keras.public) < KERAS_SAFE_MODE_FIXED:
        out.append(
            PostureFinding(
                "DLSEC-AUDIT-P003",
                Severity.HIGH,
                "keras safe_mode can be bypassed",
                f"keras {keras.version}: load_model(..., safe_mode=True) can still run code from a crafted "
                ".keras archive (CVE-2025-1550 before 3.9.0, CVE-2025-8747 before 3.11.0) or .h5 file "
                "(CVE-2025-9905 before 3.11.3)",
                "upgrade to keras>=3.11.3; until then load only model files you made",
                keras.name,
                keras.version,
            )
        )
    return out


def check_environment(env: Mapping[str, str], packages: Sequence[Package] = ()) -> list[PostureFinding]:
    """Findings from environment variables that weaken model loading."""
    out: list[PostureFinding] = []
    value = env.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "")
    if value.strip().lower() in _TORCH_TRUE:
        out.append(
            PostureFinding(
                "DLSEC-AUDIT-P002",
                Severity.HIGH,
                "torch.load forced to full pickle",
                f"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD={value}: every torch.load call that does not pass weights_only "
                "unpickles with weights_only=False, so an untrusted checkpoint can execute code",
                "unset TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (or set TORCH_FORCE_WEIGHTS_ONLY_LOAD=1)",
            )
        )
    value = env.get("HF_DATASETS_TRUST_REMOTE_CODE", "")
    if value.strip().lower() in _HF_TRUE:
        out.append(
            PostureFinding(
                "DLSEC-AUDIT-P004",
                Severity.MEDIUM,
                "datasets trusts remote code",
                f"HF_DATASETS_TRUST_REMOTE_CODE={value}: Hugging Face datasets runs dataset loading scripts "
                "downloaded from the Hub without asking",
                "unset HF_DATASETS_TRUST_REMOTE_CODE and pass trust_remote_code=True only for datasets you reviewed",
            )
        )
    return out
