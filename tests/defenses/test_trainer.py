"""The training loop through the Python API: robustness gained, determinism, checkpoints, selection, overfitting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from dlsec.attacks import PGD
from dlsec.data import digits
from dlsec.defenses import AdversarialTrainer, TrainConfig
from dlsec.defenses.training import Batch, Method, methods, split_indices
from dlsec.defenses.training.checkpoint import load_checkpoint
from dlsec.errors import ConfigError, DataError, InputError
from tests.defenses.common import FAST, model, subset, train, weights

FAST_VAL = TrainConfig().val_fraction


def _test_accuracy(net: torch.nn.Module, eps: float) -> tuple[float, float]:
    test = digits("test")
    with torch.no_grad():
        clean = float((net(test.x).argmax(1) == test.y).float().mean())
    return clean, PGD(norm="linf", eps=eps, steps=20, seed=5)(net, test.x, test.y).robust_accuracy


def test_pgd_training_is_more_robust_than_standard_training() -> None:
    data = digits("train")
    common: dict[str, Any] = {"eps": 0.2, "epochs": 5, "attack_steps": 5, "select_best": False, "width": 16}
    width = common.pop("width")
    cfg = {**FAST, **common}
    results = {}
    for method in ("standard", "pgd"):
        trainer = AdversarialTrainer(TrainConfig(method=method, **cfg), model(0, width))
        results[method] = _test_accuracy(trainer.fit(data.x, data.y, export=False).model, 0.2)
    (std_clean, std_robust), (pgd_clean, pgd_robust) = results["standard"], results["pgd"]
    assert std_clean > 0.85 and pgd_clean > 0.75  # both learnt the task
    assert std_robust < 0.15  # the same PGD breaks the standard model ...
    assert pgd_robust > std_robust + 0.2  # ... and PGD training resists it by a real margin


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    a, b = train(method="pgd"), train(method="pgd")
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    c = weights(train(method="pgd", seed=1))
    assert not all(torch.equal(wa[k], c[k]) for k in wa)
    start = model(0).state_dict()
    assert max(float((wa[k] - start[k]).abs().max()) for k in wa) > 0.05  # training moved the weights


@pytest.mark.parametrize("method", ["standard", "fgsm-rs", "n-fgsm", "pgd", "trades"])
def test_every_method_learns_and_records_its_epochs(method: str) -> None:
    res = train(method=method, epochs=3)
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    first, last = res.history[0], res.history[-1]
    assert last["train_loss"] < first["train_loss"]
    assert last["val_clean_acc"] > 0.5  # 10 classes: far above chance after three short epochs
    assert 0 <= last["val_robust_acc"] <= last["val_clean_acc"]
    assert (last["val_fgsm_acc"] is not None) == (method in ("fgsm-rs", "n-fgsm"))
    assert res.stop_reason == "completed"
    assert not res.model.training


def test_trades_beta_changes_the_result() -> None:
    a, b = weights(train(method="trades", beta=0.0)), weights(train(method="trades", beta=6.0))
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_epsilon_warm_up_is_recorded() -> None:
    res = train(method="pgd", epochs=3, warmup_epochs=2)
    assert [round(r["eps"], 6) for r in res.history] == [0.05, 0.1, 0.1]
    assert [r["lr"] for r in res.history] == [FAST["lr"]] * 3  # constant schedule
    assert [r["lr"] for r in res.history] == [FAST["lr"]] * 3  # constant schedule: the rate of each last step


def test_checkpoint_holds_everything_and_loads_weights_only(tmp_path: Path) -> None:
    res = train(method="pgd", out=tmp_path)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    steps = len(split_indices(subset().y, FAST_VAL, 0)[0]) // FAST["batch_size"]
    assert state["epoch"] == 2 and state["step"] == 2 * steps
    assert set(state) >= {"config", "model", "optimizer", "scheduler", "rng", "history", "best", "stop_reason"}
    assert set(state["rng"]) == {"data", "attack", "torch", "cuda", "python"}
    assert state["config"] == TrainConfig(**{**FAST, "method": "pgd"}).to_dict()
    assert state["history"] == list(res.history)
    assert state["best"]["epoch"] == res.selected_epoch
    assert all(torch.equal(state["best"]["model"][k], v) for k, v in res.model.state_dict().items())
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_resume_refuses_another_config_and_a_missing_checkpoint(tmp_path: Path) -> None:
    data = subset()
    train(method="pgd", out=tmp_path)
    other = AdversarialTrainer(TrainConfig(**{**FAST, "method": "pgd", "epochs": 3}), model(), out=tmp_path)
    with pytest.raises(ConfigError, match=r"another config \(epochs: 2 -> 3\)"):
        other.fit(data.x, data.y, resume=True)
    again = AdversarialTrainer(TrainConfig(**{**FAST, "method": "pgd"}), model(), out=tmp_path)
    with pytest.raises(ConfigError, match="exists: resume it"):
        again.fit(data.x, data.y)
    fresh = AdversarialTrainer(TrainConfig(**FAST), model(), out=tmp_path / "new")
    with pytest.raises(ConfigError, match="no checkpoint at"):
        fresh.fit(data.x, data.y, resume=True)
    (tmp_path / "bad").mkdir()
    torch.save({"format": "something else"}, tmp_path / "bad" / "checkpoint.pt")
    with pytest.raises(InputError, match="not a dlsec training checkpoint"):
        AdversarialTrainer(TrainConfig(**FAST), model(), out=tmp_path / "bad").fit(data.x, data.y, resume=True)


def test_resume_of_a_finished_run_trains_nothing_more(tmp_path: Path) -> None:
    data = subset()
    first = train(method="pgd", out=tmp_path)
    again = AdversarialTrainer(TrainConfig(**{**FAST, "method": "pgd"}), model(7), out=tmp_path)
    res = again.fit(data.x, data.y, resume=True, export=False)
    assert res.history == first.history
    w, v = weights(first), weights(res)
    assert all(torch.equal(w[k], v[k]) for k in w)


def test_checkpoint_with_code_is_never_unpickled(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"format": "dlsec-train-checkpoint/1", "x": Payload()}, tmp_path / "checkpoint.pt")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "checkpoint.pt")
    assert not (tmp_path / "pwned").exists()


def test_best_epoch_is_kept() -> None:
    res = train(method="pgd", epochs=4, lr=0.05)  # a learning rate high enough to wobble
    robust = [r["val_robust_acc"] for r in res.history]
    best = max(range(len(robust)), key=lambda i: (robust[i], res.history[i]["val_clean_acc"]))
    assert res.selected_epoch == best + 1 and "best" in res.history[best]["flags"]
    last = train(method="pgd", epochs=3, select_best=False)
    assert last.selected_epoch == 3 and last.history[-1]["val_robust_acc"] == last.selected["val_robust_acc"]


def test_patience_stops_a_run_that_no_longer_improves() -> None:
    res = train(method="pgd", epochs=6, patience=2, lr=1e-9)  # the weights barely move: nothing improves
    assert res.stop_reason == "early_stopping"
    assert [r["flags"] for r in res.history] == [["best"], [], ["early_stopping"]]
    assert res.selected_epoch == 1


def test_data_too_small_or_unfit(tmp_path: Path) -> None:
    data = subset(30)
    with pytest.raises(DataError, match="batch size 32 is larger than the training split"):
        AdversarialTrainer(TrainConfig(**FAST), model()).fit(data.x, data.y)
    with pytest.raises(DataError):
        AdversarialTrainer(TrainConfig(**FAST), model()).fit(data.x * 2, data.y)
    with pytest.raises(InputError, match="failed on inputs of shape"):
        AdversarialTrainer(TrainConfig(**FAST), model()).fit(torch.rand(100, 1, 28, 28), subset(100).y)


@pytest.fixture()
def collapsing_method():  # type: ignore[no-untyped-def]
    """fgsm-rs that sabotages itself after 105 steps (three epochs) (ascends the clean loss), so robust accuracy collapses."""

    class Collapsing(methods.FGSMRS):
        name = "test-collapse"
        steps = 0

        def loss(self, net, model, batch: Batch):  # type: ignore[no-untyped-def]
            type(self).steps += 1
            if type(self).steps <= 105:
                return super().loss(net, model, batch)
            logits = net(batch.x)
            return -F.cross_entropy(logits, batch.y, reduction="none"), logits.argmax(1) == batch.y

    yield Collapsing
    methods.METHODS.pop("test-collapse")


def test_catastrophic_overfitting_trips_and_rolls_back(collapsing_method: type[Method], tmp_path: Path) -> None:
    data = digits("train")  # 35 steps per epoch: the collapse starts in the fourth epoch ...
    res = train(data, out=tmp_path, method="test-collapse", epochs=6)
    assert res.stop_reason == "catastrophic_overfitting"
    flagged = [r["epoch"] for r in res.history if "catastrophic_overfitting" in r["flags"]]
    assert flagged == [len(res.history)]  # ... it is caught, and training stops there
    assert len(res.history) < 5
    kept = res.history[res.selected_epoch - 1]
    assert res.selected_epoch < len(res.history) and "best" in kept["flags"]
    assert res.history[-1]["val_robust_acc"] < kept["val_robust_acc"] - 0.3
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["stop_reason"] == "catastrophic_overfitting"
    assert all(torch.equal(state["best"]["model"][k], v) for k, v in res.model.state_dict().items())


def test_validating_every_other_epoch_still_catches_overfitting(collapsing_method: type[Method]) -> None:
    res = train(digits("train"), method="test-collapse", epochs=8, val_every=2)
    assert res.stop_reason == "catastrophic_overfitting"
    flagged = [r["epoch"] for r in res.history if "catastrophic_overfitting" in r["flags"]]
    assert flagged == [len(res.history)] and len(res.history) in (4, 6)  # caught at most one epoch late
    assert [r["val_robust_acc"] is None for r in res.history] == [e % 2 == 1 for e in range(1, len(res.history) + 1)]
    assert res.selected_epoch % 2 == 0 and "best" in res.history[res.selected_epoch - 1]["flags"]


def test_val_every_validates_the_last_epoch_and_keeps_the_weights() -> None:
    every = train(method="n-fgsm", epochs=3)
    other = train(method="n-fgsm", epochs=3, val_every=2, select_best=False)
    assert [r["val_robust_acc"] is None for r in other.history] == [True, False, False]
    assert other.history[-1]["val_robust_acc"] == every.history[-1]["val_robust_acc"]
    assert other.history[0]["val_seconds"] == 0.0
    assert all("best" not in r["flags"] for r in other.history[:1])


def test_honest_fgsm_rs_does_not_trip() -> None:
    res = train(digits("train"), method="fgsm-rs", epochs=4)
    assert res.stop_reason == "completed"
    assert all("catastrophic_overfitting" not in r["flags"] for r in res.history)
    assert res.history[-1]["val_robust_acc"] > 0.4


def test_n_fgsm_is_registered_and_does_not_overfit_catastrophically() -> None:
    assert methods.get_method("n-fgsm").detects_overfitting
    res = train(digits("train"), method="n-fgsm", epochs=4)
    assert res.stop_reason == "completed"
    assert all("catastrophic_overfitting" not in r["flags"] for r in res.history)
    last = res.history[-1]
    assert last["val_fgsm_acc"] - last["val_robust_acc"] < 0.4
    assert last["val_robust_acc"] > 0.4


def test_n_fgsm_perturbation_is_noise_plus_one_step_within_k_plus_one_eps() -> None:
    cfg = TrainConfig(method="n-fgsm", eps=0.1, nfgsm_noise=2.0)
    net = model().eval()
    data = subset(32)
    seeds = tuple(range(100, 132))
    seen: dict[str, torch.Tensor] = {}
    method = methods.get_method("n-fgsm")(cfg)
    orig = method._mixed

    def spy(net_: Any, batch: Batch, x_adv: torch.Tensor) -> Any:
        seen["x_adv"] = x_adv
        return orig(net_, batch, x_adv)

    method._mixed = spy  # type: ignore[method-assign]
    method.loss(net, net, Batch(x=data.x, y=data.y, eps=0.1, seeds=seeds))
    delta = (seen["x_adv"] - data.x).flatten(1).abs().amax(1)
    assert float(delta.max()) <= 0.3 + 1e-6  # (k + 1) * eps, never projected back to eps
    assert float(delta.max()) > 0.1 + 1e-3  # it does leave the eps ball
    assert float(seen["x_adv"].min()) >= 0.0 and float(seen["x_adv"].max()) <= 1.0
    start = methods.InnerPGD(
        eps=0.3, start_eps=0.2, steps=1, step_size=1e-7, early_stop=False, sample_seeds=seeds
    )(net, data.x, data.y).x_adv
    assert float((start - data.x).abs().max()) <= 0.2 + 1e-6  # the noise has radius k * eps
    # one step of eps from that start, clipped to [0, 1] only
    step = (seen["x_adv"] - start).abs()
    assert float(step.max()) <= 0.1 + 1e-5


def test_weight_average_is_validated_selected_saved_and_resumed(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from dlsec.defenses.training.trainer import _Run, robust_accuracy

    data = subset()
    raw = train(method="pgd", epochs=3, select_best=False)
    ema = train(method="pgd", epochs=3, select_best=False, ema=0.9, out=tmp_path / "ema")
    assert raw.history[0]["train_loss"] == ema.history[0]["train_loss"]  # the same raw training ...
    wr, we = weights(raw), weights(ema)
    assert max(float((wr[k] - we[k]).abs().max()) for k in wr) > 1e-3  # ... but the average is what is returned
    saved = load_file(str(tmp_path / "ema" / "model.safetensors"))
    assert all(torch.equal(saved[k], we[k]) for k in we)
    state = load_checkpoint(tmp_path / "ema" / "checkpoint.pt")
    assert all(torch.equal(state["ema"][k], we[k]) for k in we) and state["ema_updates"] == state["step"]
    assert not all(torch.equal(state["model"][k], we[k]) for k in we)  # the optimizer steps the raw weights
    # the validation figures are those of the averaged weights
    cfg = TrainConfig(**{**FAST, "method": "pgd", "epochs": 3, "select_best": False, "ema": 0.9})
    run = _Run(cfg, model(), current_dist(), data.x, data.y)
    counts = robust_accuracy(ema.model, data.x[run.val_idx], data.y[run.val_idx], norm="linf", eps=cfg.eps,
                             steps=cfg.val_steps, seeds=run.val_seeds)  # fmt: skip
    assert float(counts[1] / counts[3]) == ema.history[-1]["val_robust_acc"]
    # the best epoch kept is the average's, and a resumed run continues the average bit for bit
    best = train(method="pgd", epochs=3, ema=0.9)
    assert best.selected["val_robust_acc"] == max(r["val_robust_acc"] for r in best.history)
    part = tmp_path / "part"
    train(method="pgd", epochs=3, select_best=False, ema=0.9, out=part)
    again = AdversarialTrainer(cfg, model(3), out=part).fit(data.x, data.y, resume=True, export=False)
    assert all(torch.equal(weights(again)[k], we[k]) for k in we)
    with pytest.raises(ConfigError, match="ema must be < 1"):
        TrainConfig(ema=1.0)


def current_dist():  # type: ignore[no-untyped-def]
    from dlsec.defenses.training.distributed import current

    return current()
