"""Every lint rule: unsafe snippets it must flag (with the right id) and safe look-alikes it must not."""

from __future__ import annotations

import textwrap

import pytest

from dlsec.lint import REGISTRY, lint_source
from dlsec.scan.results import Severity


def ids(src: str) -> list[str]:
    return [f.rule for f in lint_source(textwrap.dedent(src)).findings]


POSITIVE = [
    # DLS101 torch.load without weights_only
    ("DLS101", "import torch\ntorch.load('m.pt')"),
    ("DLS101", "import torch\ntorch.load('m.pt', map_location='cpu')"),
    ("DLS101", "import torch as t\nt.load('m.pt')"),
    ("DLS101", "from torch import load as L\nL('m.pt')"),
    ("DLS101", "from torch import load\nload('m.pt')"),
    ("DLS101", "import torch.serialization\ntorch.serialization.load('m.pt')"),
    ("DLS101", "from torch import serialization as s\ns.load('m.pt')"),
    ("DLS101", "import torch\nloader = torch.load\nloader('m.pt')"),
    ("DLS101", "import torch\ndef f():\n    loader = torch.load\n    return loader('m.pt')"),
    ("DLS101", "import torch\ntorch.load('m.pt', weights_only=None)"),
    ("DLS101", "import torch\ntorch.load('m.pt', **opts)"),
    ("DLS101", "import functools, torch\nld = functools.partial(torch.load, map_location='cpu')\nld('m.pt')"),
    ("DLS101", "from functools import partial as P\nimport torch\nP(torch.load)('m.pt')"),
    ("DLS101", "import functools, torch\nDataset(loader=functools.partial(torch.load))"),
    ("DLS101", "def f():\n    return torch.load('m.pt')\nimport torch"),  # import after the def
    # DLS102 weights_only=False / non-literal
    ("DLS102", "import torch\ntorch.load('m.pt', weights_only=False)"),
    ("DLS102", "import torch\ntorch.load('m.pt', weights_only=0)"),
    ("DLS102", "import torch\ntorch.load('m.pt', weights_only=flag)"),
    ("DLS102", "import torch\ntorch.load('m.pt', **{'weights_only': False})"),
    ("DLS102", "import functools, torch\nld = functools.partial(torch.load, weights_only=False)\nld('m.pt')"),
    # DLS103 pickle_module
    ("DLS103", "import torch, dill\ntorch.load('m.pt', pickle_module=dill)"),
    ("DLS103", "import torch, dill\ntorch.load('m.pt', None, dill)"),
    # DLS104 load_state_dict_from_url
    ("DLS104", "import torch\ntorch.hub.load_state_dict_from_url('https://x/m.pth')"),
    (
        "DLS104",
        "from torch.utils import model_zoo\nmodel_zoo.load_url('https://x/m.pth', weights_only=False)",
    ),
    # DLS105 torch.hub.load
    ("DLS105", "import torch\ntorch.hub.load('owner/repo', 'resnet18')"),
    ("DLS105", "import torch\ntorch.hub.load('owner/repo:main', 'resnet18')"),
    ("DLS105", "import torch\ntorch.hub.load(repo, 'resnet18')"),
    ("DLS105", "from torch import hub\nhub.load('owner/repo', 'm', trust_repo=True)"),
    ("DLS105", "import torch.hub as h\nh.list('owner/repo')"),
    # DLS201 pickle family
    ("DLS201", "import pickle\npickle.load(open('f', 'rb'))"),
    ("DLS201", "import pickle\npickle.loads(data)"),
    ("DLS201", "import pickle\npickle.Unpickler(fh).load()"),
    ("DLS201", "import _pickle\n_pickle.loads(data)"),
    ("DLS201", "import _pickle as cPickle\ncPickle.load(fh)"),
    ("DLS201", "from pickle import loads as l\nl(data)"),
    ("DLS201", "import dill\ndill.load(fh)"),
    ("DLS201", "import dill\ndill.loads(data)"),
    ("DLS201", "import cloudpickle\ncloudpickle.load(fh)"),
    ("DLS201", "import cloudpickle as cp\ncp.loads(data)"),
    ("DLS201", "import joblib\njoblib.load('model.joblib')"),
    ("DLS201", "from joblib import load\nload('model.joblib')"),
    ("DLS201", "import pandas as pd\npd.read_pickle('df.pkl')"),
    ("DLS201", "import pandas\npandas.read_pickle('df.pkl')"),
    ("DLS201", "import shelve\nshelve.open('db')"),
    ("DLS201", "import jsonpickle\njsonpickle.decode(text)"),
    # DLS301 numpy allow_pickle
    ("DLS301", "import numpy as np\nnp.load('a.npy', allow_pickle=True)"),
    ("DLS301", "import numpy\nnumpy.load('a.npy', None, True)"),
    ("DLS301", "from numpy import load\nload('a.npz', allow_pickle=flag)"),
    # DLS401 yaml
    ("DLS401", "import yaml\nyaml.load(fh)"),
    ("DLS401", "import yaml\nyaml.load(fh, Loader=yaml.Loader)"),
    ("DLS401", "import yaml\nyaml.load(fh, Loader=yaml.UnsafeLoader)"),
    ("DLS401", "import yaml\nyaml.load(fh, yaml.CLoader)"),
    ("DLS401", "import yaml\nyaml.unsafe_load(fh)"),
    ("DLS401", "import yaml\nyaml.load_all(fh)"),
    ("DLS401", "from yaml import load, Loader\nload(fh, Loader=Loader)"),
    ("DLS401", "import yaml\nyaml.load(fh, Loader=get_loader())"),
    # DLS402 FullLoader
    ("DLS402", "import yaml\nyaml.load(fh, Loader=yaml.FullLoader)"),
    ("DLS402", "import yaml\nyaml.full_load(fh)"),
    # DLS501 trust_remote_code
    (
        "DLS501",
        "from transformers import AutoModel\nAutoModel.from_pretrained('org/m', trust_remote_code=True)",
    ),
    ("DLS501", "import datasets\ndatasets.load_dataset('org/d', trust_remote_code=True)"),
    ("DLS501", "pipeline('text-generation', model='org/m', trust_remote_code=trc)"),
    ("DLS501", "AutoModel.from_pretrained('org/m', **{'trust_remote_code': True})"),
    # DLS502 use_safetensors=False
    (
        "DLS502",
        "from transformers import AutoModel\nAutoModel.from_pretrained('org/m', use_safetensors=False)",
    ),
    ("DLS502", "model = Model.from_pretrained(path, use_safetensors=False)"),
    # DLS601 keras safe_mode
    ("DLS601", "import keras\nkeras.models.load_model('m.keras', safe_mode=False)"),
    ("DLS601", "import keras\nkeras.saving.load_model('m.keras', None, True, False)"),
    ("DLS601", "import tensorflow as tf\ntf.keras.models.load_model('m.keras', safe_mode=False)"),
    ("DLS601", "from tensorflow.keras.models import load_model\nload_model('m.keras', safe_mode=False)"),
    # DLS602
    ("DLS602", "import keras\nkeras.config.enable_unsafe_deserialization()"),
    ("DLS602", "import tensorflow as tf\ntf.keras.config.enable_unsafe_deserialization()"),
    # DLS901 eval/exec
    ("DLS901", "eval(open('cfg.txt').read())"),
    ("DLS901", "exec(config['code'])"),
    ("DLS901", "eval(expr)"),
    ("DLS901", "exec(f'x = {value}')"),
    ("DLS901", "compile(src, 'f', 'exec')"),
]

NEGATIVE = [
    "import torch\ntorch.load('m.pt', weights_only=True)",
    "import torch\ntorch.load('m.pt', map_location='cpu', weights_only=True)",
    "import torch as t\nt.load('m.pt', weights_only=1)",
    "import functools, torch\nld = functools.partial(torch.load, weights_only=True)\nld('m.pt')",
    "import torch\ntorch.save(obj, 'm.pt')",
    "import torch\ntorch.jit.save(m, 'm.pt')",
    "import torch\ndef f(load):\n    return load('m.pt')",  # parameter shadows nothing torch
    "from mylib import load\nload('m.pt')",
    "def load(p):\n    return p\nload('m.pt')",
    "import torch\ntorch.hub.load_state_dict_from_url('https://x/m.pth', weights_only=True)",
    "import torch\ntorch.hub.load('owner/repo:v1.2', 'resnet18')",
    "import torch\ntorch.hub.load('owner/repo:0123456789abcdef0123456789abcdef01234567', 'resnet18')",
    "import torch\ntorch.hub.load('./local_dir', 'm', source='local')",
    "import torch\ntorch.hub.load(path, 'm', source='local')",
    "import pickle\npickle.dumps(obj)",
    "import pickle\npickle.dump(obj, fh)",
    "import joblib\njoblib.dump(m, 'm.joblib')",
    "import pandas as pd\npd.read_csv('a.csv')",
    "import json\njson.load(fh)",
    "import numpy as np\nnp.load('a.npy')",
    "import numpy as np\nnp.load('a.npy', allow_pickle=False)",
    "import numpy as np\nnp.save('a.npy', arr)",
    "import yaml\nyaml.safe_load(fh)",
    "import yaml\nyaml.load(fh, Loader=yaml.SafeLoader)",
    "import yaml\nyaml.load(fh, Loader=yaml.CSafeLoader)",
    "import yaml\nyaml.load(fh, yaml.SafeLoader)",
    "from yaml import CSafeLoader as SL\nimport yaml\nyaml.load(fh, Loader=SL)",
    "import yaml\nclass L(yaml.SafeLoader):\n    pass\nyaml.load(fh, Loader=L)",
    "import yaml\nyaml.safe_load_all(fh)",
    "from transformers import AutoModel\nAutoModel.from_pretrained('org/m')",
    "from transformers import AutoModel\nAutoModel.from_pretrained('org/m', trust_remote_code=False)",
    "from transformers import AutoModel\nAutoModel.from_pretrained('org/m', use_safetensors=True)",
    "import keras\nkeras.models.load_model('m.keras')",
    "import keras\nkeras.models.load_model('m.keras', safe_mode=True)",
    "from otherlib import load_model\nload_model('m', safe_mode=False)",
    "import keras\nkeras.config.enable_interactive_logging()",
    "eval('1 + 1')",
    "exec('x = 1')",
    "model.eval()",
    "import ast\nast.literal_eval(text)",
    "import re\nre.compile(pattern)",
    "import torch\ntorch.compile(model)",
    "def eval(x):\n    return x\neval(data)",
    "import ruamel_like as yaml\nyaml.load(fh)",
]


@pytest.mark.parametrize(("rule", "src"), POSITIVE, ids=[f"{r}-{i}" for i, (r, _) in enumerate(POSITIVE)])
def test_positive(rule: str, src: str) -> None:
    assert rule in ids(src)


@pytest.mark.parametrize("src", NEGATIVE, ids=[f"safe-{i}" for i in range(len(NEGATIVE))])
def test_negative(src: str) -> None:
    assert ids(src) == []


def test_every_rule_has_positive_snippets_and_metadata() -> None:
    covered = {r for r, _ in POSITIVE}
    assert covered == set(REGISTRY)
    for rule in REGISTRY.values():
        assert rule.id.startswith("DLS") and len(rule.id) == 6
        assert rule.name and rule.why and rule.fix and "\n" not in rule.why


def test_one_finding_per_unsafe_call() -> None:
    """weights_only=False is DLS102 only; a pickle_module is DLS103 only (not DLS101 as well)."""
    assert ids("import torch\ntorch.load('m', weights_only=False)") == ["DLS102"]
    assert ids("import torch, dill\ntorch.load('m', pickle_module=dill)") == ["DLS103"]
    assert ids("import yaml\nyaml.load(f, Loader=yaml.FullLoader)") == ["DLS402"]


def test_confidence_and_severity_of_non_literals() -> None:
    """A literal decides; a variable or **kwargs gives a lower-confidence finding (a human has to look)."""
    lit = lint_source("import torch\ntorch.load('m', weights_only=False)").findings[0]
    var = lint_source("import torch\ntorch.load('m', weights_only=flag)").findings[0]
    kw = lint_source("import torch\ntorch.load('m', **kw)").findings[0]
    assert (lit.confidence, lit.severity) == ("high", Severity.HIGH)
    assert (var.confidence, var.severity) == ("low", Severity.MEDIUM)
    assert kw.rule == "DLS101" and kw.confidence == "low"
    trusted = lint_source("import torch\ntorch.hub.load('o/r', 'm', trust_repo=True)").findings[0]
    untrusted = lint_source("import torch\ntorch.hub.load('o/r', 'm')").findings[0]
    assert trusted.severity > untrusted.severity


def test_eval_severity_by_origin() -> None:
    loaded = lint_source("eval(open('cfg').read())").findings[0]
    general = lint_source("eval(expr)").findings[0]
    comp = lint_source("compile(expr, 'f', 'eval')").findings[0]
    assert loaded.severity == Severity.HIGH and general.severity == Severity.MEDIUM
    assert comp.severity == Severity.LOW


def test_scoping() -> None:
    """A function's parameter hides a module-level import of the same name; class bodies are not visible from
    methods; the last binding in a scope wins."""
    src = """
    import torch
    from torch import load
    def f(load):
        return load('m')
    class C:
        load = torch.load
        def m(self):
            return load('m')
    load = print
    load('x')
    """
    found = lint_source(textwrap.dedent(src)).findings
    # C.load = torch.load is a binding, not a call; inside m, `load` is the module's final binding (print)
    assert [f.rule for f in found] == []
    src2 = "import torch\nfrom torch import load\nx = load('a')\nload = print\n"
    assert [f.line for f in lint_source(src2).findings] == [3]
