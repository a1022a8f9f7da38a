"""Carlini-Wagner L2: how many Adam steps per round it needs on saturated images, dlsec vs foolbox.

mnist-cnn (standard, trained on MNIST test images 0-7999), the first ``n`` of the last 2,000 test images (40 by
default; 10 with --quick). Rows: dlsec ``cw-l2`` at 9 binary-search rounds x 100 and x 1000 Adam steps (its
default), foolbox ``L2CarliniWagnerAttack`` at 9 x 100, and dlsec FMN (100 steps) for scale. Success and L2 are
judged here from each library's output as in bench_minnorm.py (misclassified and in [0, 1]; failures count as
inf in the median). One thread each, one run each.

    .venv-bench/bin/python benchmarks/bench_cw_steps.py [--quick] [--n N]
"""

from __future__ import annotations

import time

import torch

import common  # pins torch to one thread before any work runs
from bench_minnorm import distances
from dlsec.attacks import FMN, CarliniWagnerL2


def main() -> None:
    ap = common.parser(__doc__)
    ap.add_argument("--n", type=int, default=40)
    args = ap.parse_args()
    n = 10 if args.quick else args.n
    model = common.load_model("mnist-cnn")
    x, y = common.mnist_test(n)

    def dlsec(attack):  # type: ignore[no-untyped-def]
        return lambda: attack(model, x, y).x_adv

    def foolbox_cw(steps: int):  # type: ignore[no-untyped-def]
        import foolbox as fb

        def run() -> torch.Tensor:
            fmodel = fb.PyTorchModel(model, bounds=(0, 1), device="cpu")
            attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=9, steps=steps, stepsize=0.01,
                                                      initial_const=1e-3, abort_early=True)  # fmt: skip
            _, adv, _ = attack(fmodel, x, y, epsilons=None)
            return adv

        return run

    cases = {
        "dlsec cw-l2 (9 x 100)": dlsec(CarliniWagnerL2(steps=100)),
        "dlsec cw-l2 (9 x 1000, its default)": dlsec(CarliniWagnerL2(steps=1000)),
        "foolbox L2CarliniWagnerAttack (9 x 100)": foolbox_cw(100),
        "dlsec FMN (100 steps)": dlsec(FMN(norm="l2", steps=100)),
    }
    rows = []
    for label, run in cases.items():
        start = time.perf_counter()
        adv = run()
        seconds = time.perf_counter() - start
        d = distances(model, x, y, adv)
        rows.append({"attack": label, "n": n, "success": float(torch.isfinite(d).float().mean()),
                     "median_l2": float(d.median()), "seconds": seconds})  # fmt: skip
    print(common.table(rows, ["attack", "n", "success", "median_l2", "seconds"]))
    print(f"wrote {common.save('bench_cw_steps', {'model': 'mnist-cnn', 'rows': rows}, args.quick)}")


if __name__ == "__main__":
    main()
