"""Gradient-masking flags: dlsec's default protocol on five deliberately masked toy models and on honest ones.

The masked models are ``tests/evaluation/masked.py``'s MASKED wrappers (softmax outputs, quantised inputs, noisy
forward, a NumPy round-trip, scaled logits) around digits-cnn-at, evaluated on the first 200 digits test points at
Linf 0.1. The honest references are digits-cnn-at itself (same points, Linf 0.1) and mnist-cnn-at (PGD-7 trained
at Linf 0.3 on the first 8,000 MNIST test images; the first 200 of the last 2,000 images, Linf 0.3).

Target: every masked model raises (at least) its expected flag; no honest adversarially trained model raises any.

    .venv-bench/bin/python benchmarks/bench_masking.py [--quick]
"""

from __future__ import annotations

import time

import common  # pins torch to one thread before any work runs


def main() -> None:
    p = common.parser(__doc__)
    args = p.parse_args()
    n = 40 if args.quick else 200
    from tests.evaluation.masked import MASKED

    from dlsec.evaluation import evaluate

    base = common.load_model("digits-cnn-at")
    xd, yd = common.digits_test(n)
    cases = [(f"{name} (digits-cnn-at)", wrap(base), xd, yd, 0.1, expected)
             for name, (wrap, expected) in MASKED.items()]
    cases.append(("honest digits-cnn-at", base, xd, yd, 0.1, None))
    xm, ym = common.mnist_test(n)
    cases.append(("honest mnist-cnn-at", common.load_model("mnist-cnn-at"), xm, ym, 0.3, None))

    rows = []
    for label, model, x, y, eps, expected in cases:
        t0 = time.perf_counter()
        res = evaluate(model, x, y, norm="linf", eps=eps)
        sec = time.perf_counter() - t0
        flags = list(res.flags)
        ok = (expected in flags) if expected else not flags
        rows.append({
            "model": label, "eps": eps, "n": len(x),
            "expected_flag": expected or "none",
            "flags_fired": ", ".join(flags) or "none",
            "ok": ok,
            "clean_acc": res.clean_accuracy, "robust_acc": res.robust_accuracy,
            "seconds": sec,
            "check_details": {c.name: c.detail for c in res.checks},
        })
        print(f"  {label}: flags {flags or 'none'} (expected {expected or 'none'}) -> {'ok' if ok else 'WRONG'}; "
              f"clean {res.clean_accuracy:.3f} robust {res.robust_accuracy:.3f}, {sec:.1f}s", flush=True)
    print()
    print(common.table(rows, ["model", "eps", "expected_flag", "flags_fired", "ok", "clean_acc", "robust_acc",
                              "seconds"]))
    met = all(r["ok"] for r in rows)
    print(f"\nTarget (each masked model flagged with its flag, no honest model flagged): {'met' if met else 'NOT met'}")
    common.save("bench_masking", {"threads": common.THREADS, "n": n, "rows": rows, "met": met}, args.quick)


if __name__ == "__main__":
    main()
