"""Full robustness evaluation: dlsec ``evaluate`` (default protocol) vs AutoAttack ``standard``, same points.

* digits-cnn-at (dlsec's PGD-trained demo model), the first 450 digits test points, Linf eps 0.1;
* mnist-cnn-at (PGD-7 trained at Linf 0.3 here, see common.py), the first 200 of the last 2,000 MNIST test
  images (the model was trained on the first 8,000), Linf eps 0.3. (200, not 450: on this shared 2-core machine
  AutoAttack standard on 450 MNIST points would take about 40 minutes.)

dlsec's default protocol is the cascade APGD-CE (100 steps) -> APGD-T (9 targets x 100) -> Square (1,000
queries), then FMN distances (100 steps) on every correct point and the sanity checks (a 5-epsilon APGD-CE curve
on 128 points, gradient/forward checks). AutoAttack standard is APGD-CE -> APGD-T (9 x 100) -> FAB-T (9 x 100)
-> Square (5,000 queries). Per-stage times: dlsec's from the phases it announces, AutoAttack's from the
cumulative times in its 'auto-attack' DEBUG log. Both run on one thread; both models are wrapped in a forward /
gradient counter (dlsec's own, and common.Counting for AutoAttack). One run each (they take minutes).

Robust accuracy is re-judged here from each library's adversarial inputs (misclassified, in [0, 1], within eps).

    .venv-bench/bin/python benchmarks/bench_eval.py [--quick] [--models digits-cnn-at mnist-cnn-at]
"""

from __future__ import annotations

import logging
import re
import time

import torch

import common  # pins torch to one thread before any work runs

SETTINGS = {
    "digits-cnn-at": dict(eps=0.1, n=450, quick_n=60, data="digits test, first 450"),
    "mnist-cnn-at": dict(eps=0.3, n=200, quick_n=40, data="MNIST test images 8000-8199 (model trained on 0-7999)"),
}


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((time.perf_counter(), record.getMessage()))


def run_dlsec(model, x, y, eps):
    from dlsec.evaluation import evaluate

    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    res = evaluate(model, x, y, norm="linf", eps=eps, progress=lambda ph: marks.append((ph, time.perf_counter())))
    wall = time.perf_counter() - t0
    marks.append(("end", time.perf_counter()))
    phases = {a[0]: b[1] - a[1] for a, b in zip(marks, marks[1:], strict=False)}
    stages = {s.name: s for s in res.attacks}
    breakdown = []
    for name, sec in phases.items():
        s = stages.get(name)
        breakdown.append({
            "phase": name,
            "seconds": sec,
            "robust_acc_after": s.robust_accuracy if s else None,
            "broken": s.broken if s else None,
            "attacked": s.attacked if s else None,
            "grads": s.backwards if s else None,
            "forwards": s.forwards if s else None,
        })
    return res, wall, breakdown


def run_autoattack(model, x, y, eps):
    from pyautoattack import AutoAttack

    cm = common.Counting(model)
    log = logging.getLogger("auto-attack")
    cap = _Capture()
    log.addHandler(cap)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        adversary = AutoAttack(cm, norm="Linf", eps=eps, version="standard", device="cpu", seed=0)
        t0 = time.perf_counter()
        x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=len(x))
        wall = time.perf_counter() - t0
    finally:
        log.removeHandler(cap)
    breakdown, prev = [], 0.0
    pat = re.compile(r"robust accuracy after (\S+): ([\d.]+)% \(total time ([\d.]+) s\)")
    for _, msg in cap.lines:
        m = pat.search(msg)
        if m:
            tot = float(m.group(3))
            breakdown.append({"phase": m.group(1).lower(), "seconds": tot - prev,
                              "robust_acc_after": float(m.group(2)) / 100})
            prev = tot
    warnings = [msg for _, msg in cap.lines if "warning" in msg.lower() or "check" in msg.lower()]
    return x_adv, y_adv, wall, breakdown, cm, warnings


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--n", type=int, default=None, help="points per model (default: 450 digits, 200 MNIST)")
    args = p.parse_args()
    rows, details = [], {}
    for name in args.models:
        st = SETTINGS[name]
        n = args.n or (st["quick_n"] if args.quick else st["n"])
        eps = st["eps"]
        model = common.load_model(name)
        x, y = (common.digits_test(n) if name.startswith("digits") else common.mnist_test(n))
        clean = common.clean_accuracy(model, x, y)
        print(f"\n## {name}: {n} points ({st['data']}), Linf eps {eps}, clean acc {clean:.4f}", flush=True)

        res, dl_wall, dl_break = run_dlsec(model, x, y, eps)
        print(f"dlsec evaluate: robust {res.robust_accuracy:.4f} in {dl_wall:.1f}s, flags {list(res.flags)}",
              flush=True)
        x_adv, y_adv, aa_wall, aa_break, cm, aa_warn = run_autoattack(model, x, y, eps)
        aa_ra = common.robust_acc(model, x, y, x_adv, "linf", eps)
        print(f"AutoAttack standard: robust {aa_ra:.4f} in {aa_wall:.1f}s", flush=True)

        cascade_s = sum(b["seconds"] for b in dl_break if b["phase"] in {s.name for s in res.attacks})
        diff_pts = 100 * (res.robust_accuracy - aa_ra)
        row = {
            "model": name, "n": n, "eps": eps, "clean_acc": clean,
            "dlsec_robust": res.robust_accuracy, "aa_robust": aa_ra,
            "diff_pct_points": diff_pts,
            "diff_n_points": round((res.robust_accuracy - aa_ra) * n),
            "dlsec_s": dl_wall, "dlsec_cascade_s": cascade_s, "aa_s": aa_wall,
            "time_ratio": dl_wall / aa_wall, "cascade_ratio": cascade_s / aa_wall,
            "dlsec_flags": ",".join(res.flags) or "none",
            "dlsec_median_l_inf_dist": res.median_distance,
        }
        rows.append(row)
        # points each finds that the other misses
        dl_broken = torch.tensor([d <= eps for d in res.distances])  # FMN distances (not the cascade)
        details[name] = {
            "row": row,
            "dlsec_phases": dl_break,
            "autoattack_attacks": aa_break,
            "autoattack_grads": cm.backwards, "autoattack_forwards": cm.forwards,
            "dlsec_grads": sum(s.backwards for s in res.attacks),
            "dlsec_forwards": sum(s.forwards for s in res.attacks),
            "autoattack_log_checks": aa_warn,
            "dlsec_fmn_within_eps": int(dl_broken.sum()),
            "dlsec_eval": res.to_dict() | {"distances": None},
        }
        print("\ndlsec phases:\n")
        print(common.table(dl_break, ["phase", "seconds", "robust_acc_after", "broken", "attacked", "grads"], 4))
        print("\nAutoAttack attacks (from its log):\n")
        print(common.table(aa_break, ["phase", "seconds", "robust_acc_after"], 4))
        print(f"\ngradients (per-sample): dlsec cascade {details[name]['dlsec_grads']}, "
              f"AutoAttack {cm.backwards}; forwards: dlsec cascade {details[name]['dlsec_forwards']}, "
              f"AutoAttack {cm.forwards}")
        common.save("bench_eval", {"threads": common.THREADS, "rows": [row], "details": {name: details[name]}},
                    args.quick, merge=True)

    print("\n## Summary\n")
    print(common.table(rows, ["model", "n", "eps", "clean_acc", "dlsec_robust", "aa_robust", "diff_pct_points",
                              "diff_n_points", "dlsec_s", "aa_s", "time_ratio", "dlsec_flags"], 4))
    for r in rows:
        acc_ok = r["diff_pct_points"] <= 0.2 + 1e-9
        time_ok = r["time_ratio"] <= 1 / 3
        print(f"{r['model']}: robust accuracy dlsec - AA = {r['diff_pct_points']:+.2f} points "
              f"({'met' if acc_ok else 'NOT met'}, target <= +0.2); time ratio {r['time_ratio']:.3f} "
              f"({'met' if time_ok else 'NOT met'}, target <= 0.333)")


if __name__ == "__main__":
    main()
