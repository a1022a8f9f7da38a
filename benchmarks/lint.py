"""Source linter benchmark: ``dlsec lint`` vs bandit on unsafe model/data loading code.

    .venv-bench/bin/python benchmarks/lint.py [--quick]

1. Detection on a labelled corpus built here: one file per form (every unsafe call form dlsec targets and the
   safe look-alikes), labelled unsafe or safe. A tool flags a file when it reports anything on it; for bandit,
   its import-only checks (B4xx: "import pickle" and the like) are left out, because they fire on the safe
   forms' imports as much as on the unsafe ones; its call checks (B301 pickle, B307 eval, B102 exec, B506
   yaml_load, B614 torch.load, B615 Hugging Face unpinned download, ...) all count. The Hugging Face forms
   pass a commit ``revision=`` so that B615 (a different concern: revision pinning, which dlsec has no rule
   for) does not decide them either way.
2. Findings on code that is not the corpus: this project's ``tests/`` and the installed sources of torchattacks,
   ART (``art``) and foolbox in this interpreter's site-packages, counted per rule (dlsec) and per test id
   (bandit, all of them and the loading-related ones). Every dlsec finding on the peers' sources is listed with
   the verdict of a hand check (kept in ``REVIEWED`` below; a finding not reviewed is marked so).
3. CPU time (user + system of the child process) of each tool as a CLI on ``tests/`` + the three peers,
   median of 3 (1 with ``--quick``).

Markdown on stdout, JSON in ``benchmarks/results/lint.json`` (``lint.quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SITE = Path(sysconfig.get_paths()["purelib"])
PEERS = ("torchattacks", "art", "foolbox")
BANDIT_LOADING = frozenset({"B102", "B301", "B302", "B307", "B506", "B614", "B615"})
"""Bandit call checks about deserialization, dynamic code and model downloads."""
DLSEC = [
    sys.executable,
    "-c",
    "from dlsec.cli import COMMANDS, main; COMMANDS.setdefault('lint', 'dlsec.cli.lint:lint'); main()",
    "lint",
]
"""``dlsec lint`` through ``dlsec.cli.main`` (works before and after the command is registered)."""

# --------------------------------------------------------------------------------------------------- corpus
# (form, expected dlsec rule or None for a safe form, code)
UNSAFE: list[tuple[str, str, str]] = [
    ("torch.load(f)", "DLS101", "import torch\nm = torch.load(path)\n"),
    ("torch.load(f, map_location)", "DLS101", "import torch\nm = torch.load(path, map_location='cpu')\n"),
    ("import torch as t; t.load", "DLS101", "import torch as t\nm = t.load(path)\n"),
    ("from torch import load as L", "DLS101", "from torch import load as L\nm = L(path)\n"),
    ("torch.serialization.load", "DLS101", "import torch\nm = torch.serialization.load(path)\n"),
    ("loader = torch.load", "DLS101", "import torch\nloader = torch.load\nm = loader(path)\n"),
    ("functools.partial(torch.load)", "DLS101",
     "import functools\nimport torch\nld = functools.partial(torch.load, map_location='cpu')\nm = ld(path)\n"),
    ("partial alias, called inline", "DLS101",
     "from functools import partial as P\nimport torch\nm = P(torch.load)(path)\n"),
    ("torch.load(**kwargs)", "DLS101", "import torch\nm = torch.load(path, **opts)\n"),
    ("torch.load(weights_only=False)", "DLS102", "import torch\nm = torch.load(path, weights_only=False)\n"),
    ("torch.load(weights_only=flag)", "DLS102", "import torch\nm = torch.load(path, weights_only=flag)\n"),
    ("partial(torch.load, weights_only=False)", "DLS102",
     "import functools\nimport torch\nld = functools.partial(torch.load, weights_only=False)\nm = ld(path)\n"),
    ("torch.load(pickle_module=dill)", "DLS103",
     "import dill\nimport torch\nm = torch.load(path, pickle_module=dill)\n"),
    ("torch.hub.load_state_dict_from_url(url)", "DLS104",
     "import torch\nsd = torch.hub.load_state_dict_from_url(url)\n"),
    ("torch.hub.load unpinned", "DLS105", "import torch\nm = torch.hub.load('owner/repo', 'resnet18')\n"),
    ("torch.hub.load branch + trust_repo", "DLS105",
     "import torch\nm = torch.hub.load('owner/repo:main', 'resnet18', trust_repo=True)\n"),
    ("pickle.load", "DLS201", "import pickle\nwith open(path, 'rb') as fh:\n    m = pickle.load(fh)\n"),
    ("pickle.loads", "DLS201", "import pickle\nm = pickle.loads(data)\n"),
    ("pickle.Unpickler", "DLS201", "import pickle\nm = pickle.Unpickler(fh).load()\n"),
    ("from pickle import loads as l", "DLS201", "from pickle import loads as l\nm = l(data)\n"),
    ("_pickle.loads", "DLS201", "import _pickle\nm = _pickle.loads(data)\n"),
    ("dill.load", "DLS201", "import dill\nm = dill.load(fh)\n"),
    ("cloudpickle.loads", "DLS201", "import cloudpickle\nm = cloudpickle.loads(data)\n"),
    ("joblib.load", "DLS201", "import joblib\nm = joblib.load('model.joblib')\n"),
    ("pd.read_pickle", "DLS201", "import pandas as pd\ndf = pd.read_pickle('df.pkl')\n"),
    ("shelve.open", "DLS201", "import shelve\ndb = shelve.open('db')\n"),
    ("np.load(allow_pickle=True)", "DLS301", "import numpy as np\na = np.load(path, allow_pickle=True)\n"),
    ("yaml.load(f)", "DLS401", "import yaml\ncfg = yaml.load(fh)\n"),
    ("yaml.load(Loader=yaml.Loader)", "DLS401", "import yaml\ncfg = yaml.load(fh, Loader=yaml.Loader)\n"),
    ("yaml.load(Loader=yaml.UnsafeLoader)", "DLS401",
     "import yaml\ncfg = yaml.load(fh, Loader=yaml.UnsafeLoader)\n"),
    ("yaml.unsafe_load", "DLS401", "import yaml\ncfg = yaml.unsafe_load(fh)\n"),
    ("yaml.load_all(f)", "DLS401", "import yaml\ncfgs = list(yaml.load_all(fh))\n"),
    ("yaml.load(Loader=yaml.FullLoader)", "DLS402", "import yaml\ncfg = yaml.load(fh, Loader=yaml.FullLoader)\n"),
    ("yaml.full_load", "DLS402", "import yaml\ncfg = yaml.full_load(fh)\n"),
    ("from_pretrained(trust_remote_code=True)", "DLS501",
     "from transformers import AutoModel\nm = AutoModel.from_pretrained('org/m', revision='0123456789abcdef0123456789abcdef01234567', trust_remote_code=True)\n"),
    ("load_dataset(trust_remote_code=True)", "DLS501",
     "from datasets import load_dataset\nd = load_dataset('org/d', revision='0123456789abcdef0123456789abcdef01234567', trust_remote_code=True)\n"),
    ("from_pretrained(use_safetensors=False)", "DLS502",
     "from transformers import AutoModel\nm = AutoModel.from_pretrained('org/m', revision='0123456789abcdef0123456789abcdef01234567', use_safetensors=False)\n"),
    ("keras load_model(safe_mode=False)", "DLS601",
     "import keras\nm = keras.models.load_model('m.keras', safe_mode=False)\n"),
    ("tf.keras load_model(safe_mode=False)", "DLS601",
     "import tensorflow as tf\nm = tf.keras.models.load_model('m.keras', safe_mode=False)\n"),
    ("keras.config.enable_unsafe_deserialization", "DLS602",
     "import keras\nkeras.config.enable_unsafe_deserialization()\n"),
    ("eval(config content)", "DLS901", "with open('cfg.txt') as fh:\n    value = eval(fh.read())\n"),
    ("exec(model attribute)", "DLS901", "exec(model.config.code)\n"),
]  # fmt: skip

SAFE: list[tuple[str, str]] = [
    ("torch.load(weights_only=True)", "import torch\nm = torch.load(path, weights_only=True)\n"),
    ("t.load(weights_only=True) alias", "import torch as t\nm = t.load(path, map_location='cpu', weights_only=True)\n"),
    ("partial(torch.load, weights_only=True)",
     "import functools\nimport torch\nld = functools.partial(torch.load, weights_only=True)\nm = ld(path)\n"),
    ("load_state_dict_from_url(weights_only=True)",
     "import torch\nsd = torch.hub.load_state_dict_from_url(url, weights_only=True, check_hash=True)\n"),
    ("torch.hub.load pinned sha",
     "import torch\nm = torch.hub.load('owner/repo:0123456789abcdef0123456789abcdef01234567', 'resnet18')\n"),
    ("torch.hub.load source='local'", "import torch\nm = torch.hub.load('./hub', 'resnet18', source='local')\n"),
    ("torch.save", "import torch\ntorch.save(model.state_dict(), path)\n"),
    ("safetensors load_file", "from safetensors.torch import load_file\nsd = load_file(path)\n"),
    ("local function named load", "def load(p):\n    return open(p).read()\nm = load(path)\n"),
    ("parameter named load", "import torch\ndef f(load):\n    return load(path)\n"),
    ("pickle.dumps", "import pickle\nb = pickle.dumps(obj)\n"),
    ("joblib.dump", "import joblib\njoblib.dump(model, 'm.joblib')\n"),
    ("pd.read_csv", "import pandas as pd\ndf = pd.read_csv('a.csv')\n"),
    ("json.load", "import json\nwith open(path) as fh:\n    cfg = json.load(fh)\n"),
    ("np.load()", "import numpy as np\na = np.load(path)\n"),
    ("np.load(allow_pickle=False)", "import numpy as np\na = np.load(path, allow_pickle=False)\n"),
    ("yaml.safe_load", "import yaml\ncfg = yaml.safe_load(fh)\n"),
    ("yaml.load(Loader=yaml.SafeLoader)", "import yaml\ncfg = yaml.load(fh, Loader=yaml.SafeLoader)\n"),
    ("yaml.load(Loader=yaml.CSafeLoader)", "import yaml\ncfg = yaml.load(fh, Loader=yaml.CSafeLoader)\n"),
    ("yaml.load(f, SafeLoader) positional", "import yaml\ncfg = yaml.load(fh, yaml.SafeLoader)\n"),
    ("yaml.load(Loader=SafeLoader subclass)",
     "import yaml\nclass L(yaml.SafeLoader):\n    pass\ncfg = yaml.load(fh, Loader=L)\n"),
    ("from_pretrained pinned, defaults",
     "from transformers import AutoModel\nm = AutoModel.from_pretrained('org/m', revision='0123456789abcdef0123456789abcdef01234567')\n"),
    ("from_pretrained(trust_remote_code=False)",
     "from transformers import AutoModel\nm = AutoModel.from_pretrained('org/m', revision='0123456789abcdef0123456789abcdef01234567', trust_remote_code=False)\n"),
    ("from_pretrained(use_safetensors=True)",
     "from transformers import AutoModel\nm = AutoModel.from_pretrained('org/m', revision='0123456789abcdef0123456789abcdef01234567', use_safetensors=True)\n"),
    ("keras load_model()", "import keras\nm = keras.models.load_model('m.keras')\n"),
    ("keras load_model(safe_mode=True)", "import keras\nm = keras.models.load_model('m.keras', safe_mode=True)\n"),
    ("eval of a literal", "x = eval('1 + 1')\n"),
    ("model.eval()", "model.eval()\n"),
    ("ast.literal_eval", "import ast\nx = ast.literal_eval(text)\n"),
    ("re.compile", "import re\np = re.compile(pattern)\n"),
    ("torch.compile", "import torch\nm = torch.compile(model)\n"),
]  # fmt: skip


def build_corpus(root: Path) -> dict[str, tuple[str, str | None]]:
    """Write one file per form; returns file name -> (form, expected dlsec rule or None)."""
    labels: dict[str, tuple[str, str | None]] = {}
    for i, (form, rule, code) in enumerate(UNSAFE):
        name = f"unsafe_{i:02d}.py"
        (root / name).write_text(code)
        labels[name] = (form, rule)
    for i, (form, code) in enumerate(SAFE):
        name = f"safe_{i:02d}.py"
        (root / name).write_text(code)
        labels[name] = (form, None)
    return labels


# --------------------------------------------------------------------------------------------------- tools
def run_tool(cmd: list[str]) -> tuple[int, str, float]:
    """``(exit status, stdout, CPU seconds of the child)``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode()
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"{cmd[:4]} failed with {proc.returncode}: {err.read().decode()[-2000:]}")
    return proc.returncode, stdout, usage.ru_utime + usage.ru_stime


def dlsec_findings(paths: list[str]) -> tuple[list[dict], list[dict], float]:
    _, out, cpu = run_tool([*DLSEC, "--format", "json", *paths])
    doc = json.loads(out)
    return doc["findings"], doc["errors"], cpu


def bandit_findings(paths: list[str]) -> tuple[list[dict], list[dict], float]:
    _, out, cpu = run_tool([str(BIN / "bandit"), "-f", "json", "-q", "-r", *paths])
    doc = json.loads(out)
    return doc["results"], doc.get("errors", []), cpu


def _rel(path: str) -> str:
    p = Path(path).resolve()
    for base in (SITE, ROOT):
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            continue
    return path


# Hand check of every dlsec finding on the peers' sources (ART 1.20.1, torchattacks 3.5.1, foolbox 3.3.4),
# by reading the code around each line. Keyed by (path under site-packages, line, rule).
REVIEWED = {
    ("art/defences/trainer/adversarial_trainer_oaat_pytorch.py", 172, "DLS101"):
        "true: torch.load(full_path_load) of an LPIPS checkpoint path, no weights_only",
    ("art/defences/trainer/adversarial_trainer_oaat_pytorch.py", 369, "DLS101"):
        "true: same call in the second training loop",
    ("art/estimators/classification/pytorch.py", 1095, "DLS101"):
        "true: __setstate__ torch.loads '<name>.model' from ART_DATA_PATH without weights_only",
    ("art/estimators/classification/pytorch.py", 1105, "DLS101"):
        "true: __setstate__ torch.loads the optimizer state without weights_only",
    ("art/estimators/regression/pytorch.py", 921, "DLS101"): "true: as in the classifier's __setstate__",
    ("art/estimators/regression/pytorch.py", 930, "DLS101"): "true: optimizer state, as above",
    ("art/estimators/object_detection/pytorch_detection_transformer.py", 99, "DLS105"):
        "true: torch.hub.load('facebookresearch/detr', ...) follows the default branch",
    ("art/estimators/speech_recognition/pytorch_espresso.py", 169, "DLS402"):
        "true: yaml.load(file, Loader=yaml.FullLoader) of a config file",
    ("torchattacks/attack.py", 12, "DLS901"):
        "true but benign: eval('atk.' + func.__name__ + ...) built from a method name, not data (medium, low confidence)",
    ("torchattacks/attack.py", 408, "DLS101"): "true: torch.load of a saved adversarial data set without weights_only",
}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="CPU time of one run instead of the median of 3")
    args = ap.parse_args()
    repeats = 1 if args.quick else 3

    # 1. labelled corpus
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        labels = build_corpus(corpus)
        d_find, d_err, _ = dlsec_findings([str(corpus)])
        b_find, b_err, _ = bandit_findings([str(corpus)])
    d_by: dict[str, set[str]] = collections.defaultdict(set)
    for f in d_find:
        d_by[Path(f["path"]).name].add(f["rule"])
    b_by: dict[str, set[str]] = collections.defaultdict(set)
    for r in b_find:
        if not r["test_id"].startswith("B4"):
            b_by[Path(r["filename"]).name].add(r["test_id"])
    rows = []
    for name, (form, rule) in labels.items():
        rows.append(
            {
                "file": name,
                "form": form,
                "unsafe": rule is not None,
                "expected_rule": rule,
                "dlsec": sorted(d_by.get(name, ())),
                "dlsec_right_rule": rule in d_by.get(name, ()) if rule else not d_by.get(name),
                "bandit": sorted(b_by.get(name, ())),
            }
        )
    unsafe_rows = [r for r in rows if r["unsafe"]]
    safe_rows = [r for r in rows if not r["unsafe"]]
    summary = {
        tool: {
            "unsafe_forms": len(unsafe_rows),
            "detected": sum(bool(r[tool]) for r in unsafe_rows),
            "safe_forms": len(safe_rows),
            "false_positives": sum(bool(r[tool]) for r in safe_rows),
        }
        for tool in ("dlsec", "bandit")
    }
    summary["dlsec"]["detected_with_expected_rule"] = sum(r["dlsec_right_rule"] for r in unsafe_rows)

    # 2. outside code
    peer_paths = [str(SITE / p) for p in PEERS if (SITE / p).is_dir()]
    targets = {"tests": [str(ROOT / "tests")], "peers": peer_paths}
    outside: dict[str, dict] = {}
    for label, paths in targets.items():
        df, de, _ = dlsec_findings(paths)
        bf, _, _ = bandit_findings(paths)
        bandit_ids = collections.Counter(r["test_id"] for r in bf)
        outside[label] = {
            "paths": [_rel(p) for p in paths],
            "dlsec_per_rule": dict(sorted(collections.Counter(f["rule"] for f in df).items())),
            "dlsec_errors": de,
            "bandit_per_test": dict(sorted(bandit_ids.items())),
            "bandit_loading_related": sum(n for t, n in bandit_ids.items() if t in BANDIT_LOADING),
            "dlsec_findings": [
                {
                    "where": f"{_rel(f['path'])}:{f['line']}",
                    "rule": f["rule"],
                    "severity": f["severity"],
                    "confidence": f["confidence"],
                    "message": f["message"],
                    **(
                        {"review": REVIEWED.get((_rel(f["path"]), f["line"], f["rule"]), "not reviewed")}
                        if label == "peers"
                        else {}
                    ),
                }
                for f in df
            ],
            "bandit_loading_findings": [
                {
                    "where": f"{_rel(r['filename'])}:{r['line_number']}",
                    "test_id": r["test_id"],
                    "text": r["issue_text"],
                }
                for r in bf
                if r["test_id"] in BANDIT_LOADING
            ],
        }

    # 3. CPU time
    all_paths = [str(ROOT / "tests"), *peer_paths]
    cpu: dict[str, dict] = {}
    for tool, fn in (("dlsec", dlsec_findings), ("bandit", bandit_findings)):
        times = [fn(all_paths)[2] for _ in range(repeats)]
        cpu[tool] = {"median_s": round(statistics.median(times), 3), "runs_s": [round(t, 3) for t in times]}
    n_files = sum(1 for p in all_paths for _ in Path(p).rglob("*.py"))

    doc = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "versions": _versions(),
        "corpus": {"summary": summary, "rows": rows, "bandit_errors": b_err, "dlsec_errors": d_err},
        "outside": outside,
        "cpu": {"files": n_files, "repeats": repeats, **cpu},
    }
    out = HERE / "results" / ("lint.quick.json" if args.quick else "lint.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    _markdown(doc)
    print(f"\nJSON: {out.relative_to(ROOT)}")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("dlsec", "bandit", "adversarial-robustness-toolbox", "torchattacks", "foolbox"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _markdown(doc: dict) -> None:
    s = doc["corpus"]["summary"]
    print("### Labelled corpus (one file per form)\n")
    print("| tool | unsafe forms flagged | safe forms flagged (false positives) |")
    print("|---|---|---|")
    for tool in ("dlsec", "bandit"):
        t = s[tool]
        extra = f" ({t['detected_with_expected_rule']} with the expected rule)" if tool == "dlsec" else ""
        print(
            f"| {tool} | {t['detected']}/{t['unsafe_forms']}{extra} | {t['false_positives']}/{t['safe_forms']} |"
        )
    print("\n| form | label | dlsec | bandit (call checks) |")
    print("|---|---|---|---|")
    for r in doc["corpus"]["rows"]:
        label = f"unsafe ({r['expected_rule']})" if r["unsafe"] else "safe"
        print(
            f"| `{r['form']}` | {label} | {', '.join(r['dlsec']) or '-'} | {', '.join(r['bandit']) or '-'} |"
        )
    print("\n### Outside code\n")
    print("| code | dlsec findings per rule | bandit loading-related (all bandit findings) |")
    print("|---|---|---|")
    for label, o in doc["outside"].items():
        d = ", ".join(f"{k}: {v}" for k, v in o["dlsec_per_rule"].items()) or "none"
        total = sum(o["bandit_per_test"].values())
        loading = ", ".join(f"{k}: {v}" for k, v in o["bandit_per_test"].items() if k in BANDIT_LOADING)
        print(f"| {label} | {d} | {o['bandit_loading_related']} ({loading or 'none'}; {total} in all) |")
    print("\nHand check of dlsec's findings on the peers:\n")
    for f in doc["outside"]["peers"]["dlsec_findings"]:
        print(f"- `{f['where']}` {f['rule']}: {f['review']}")
    c = doc["cpu"]
    print(f"\n### CPU time on {c['files']} files (tests/ + peers), median of {c['repeats']}\n")
    print("| tool | CPU s |")
    print("|---|---|")
    for tool in ("dlsec", "bandit"):
        print(f"| {tool} | {c[tool]['median_s']} |")


if __name__ == "__main__":
    main()
