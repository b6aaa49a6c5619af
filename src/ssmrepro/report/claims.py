"""Claims: checked against the paper's own printed numbers and against the reproduced seeds.

A claim expands into sub-checks (one per metric x condition x compared pair). On the reproduced
side a ``beats`` sub-check is a one-sided Welch t-test across seeds (scipy), needing n >= 2 on each
side; against a published-only row (no card) it is a one-sample t-test against the printed value.
``equal`` and ``ratio`` compare means against a tolerance; ``status`` looks at the result status.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from ..tables import Claim, Table, parse_number, printed_decimals
from .collect import Measure

ALPHA = 0.05

# verdicts of one sub-check (reproduced side)
REPRODUCED = "reproduced"
NOT_SIGNIFICANT = "same direction, not significant"
NOT_REPRODUCED = "not reproduced"
N_TOO_SMALL = "n too small"
NOT_RUN = "not run"
UNAVAILABLE = "no number"

MeasureFn = Callable[[str, str, str], "Measure | None"]  # (row, condition, column) -> Measure


@dataclass
class SubCheck:
    claim: str
    kind: str
    column: str
    condition: str
    a: str  # row that should win / numerator / first row
    b: str | None  # row that should lose / denominator / second row
    paper_a: str | None = None
    paper_b: str | None = None
    paper_holds: bool | None = None  # None: the paper prints no number for one side
    paper_note: str = ""
    mean_a: float | None = None
    mean_b: float | None = None
    n_a: int = 0
    n_b: int = 0
    p: float | None = None
    test: str = ""
    verdict: str = NOT_RUN
    note: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ClaimResult:
    claim: Claim
    checks: list[SubCheck] = field(default_factory=list)
    margin_note: str = ""  # stated margin ("by 0.24 dB") against the printed numbers
    margin_ok: bool | None = None

    @property
    def paper_verdict(self) -> str:
        known = [c.paper_holds for c in self.checks if c.paper_holds is not None]
        if not known:
            return "no printed numbers"
        failed = sum(1 for h in known if not h)
        if failed == 0 and self.margin_ok is not False:
            return "supported"
        parts = []
        if failed:
            parts.append(f"{failed} of {len(known)} comparisons not supported")
        if self.margin_ok is False:
            parts.append("stated margin differs")
        return "not supported: " + "; ".join(parts)

    @property
    def paper_supported(self) -> bool:
        return self.paper_verdict == "supported"

    @property
    def verdict(self) -> str:
        vs = [c.verdict for c in self.checks]
        if not vs or all(v == NOT_RUN for v in vs):
            return NOT_RUN
        if any(v == NOT_REPRODUCED for v in vs):
            return NOT_REPRODUCED
        if all(v == REPRODUCED for v in vs):
            return REPRODUCED
        if any(v in (NOT_RUN, UNAVAILABLE) for v in vs):
            return "incomplete"
        if any(v == N_TOO_SMALL for v in vs):
            return N_TOO_SMALL
        return NOT_SIGNIFICANT

    def as_dict(self) -> dict:
        return {"id": self.claim.id, "text": self.claim.text, "kind": self.claim.kind,
                "paper": self.paper_verdict, "reproduced": self.verdict,
                "margin": self.margin_note, "checks": [c.as_dict() for c in self.checks]}


def _better(table: Table, column: str) -> int:
    return -1 if table.column(column).better == "lower" else 1


def _rel_close(a: float, b: float, rel: float | None, abs_: float | None) -> bool:
    if abs_ is not None and abs(a - b) <= abs_ + 1e-12:
        return True
    if rel is not None and abs(a - b) <= rel * max(abs(a), abs(b)) + 1e-12:
        return True
    return rel is None and abs_ is None and a == b


def evaluate_claim(table: Table, claim: Claim, measure_fn: MeasureFn | None = None,
                   status_fn: Callable[[str, str], list[str]] | None = None) -> ClaimResult:
    """Check one claim on the printed numbers and, given ``measure_fn``, on the reproduced seeds."""
    res = ClaimResult(claim)
    pairs: list[tuple[str, str | None]]
    if claim.kind == "beats":
        pairs = [(claim.winner, loser) for loser in claim.losers]
    elif claim.kind == "order":
        pairs = list(zip(claim.rows, claim.rows[1:]))
    elif claim.kind == "equal":
        pairs = [(claim.rows[0], other) for other in claim.rows[1:]]
    elif claim.kind == "ratio":
        pairs = [(claim.numerator, claim.denominator)]
    else:  # status
        pairs = [(claim.row, None)]

    for cond in claim.conditions:
        if claim.kind == "status":
            res.checks.append(_status_check(table, claim, cond, status_fn))
            continue
        for col in claim.metrics:
            for a, b in pairs:
                res.checks.append(_pair_check(table, claim, cond, col, a, b, measure_fn))
    if claim.by is not None:
        _check_margin(table, claim, res)
    return res


def _pair_check(table, claim, cond, col, a, b, measure_fn) -> SubCheck:
    kind = "beats" if claim.kind in ("beats", "order") else claim.kind
    sc = SubCheck(claim.id, kind, col, cond, a, b)
    row_a, row_b = table.row(a), table.row(b)
    sc.paper_a, sc.paper_b = row_a.published_value(cond, col), row_b.published_value(cond, col)
    pa, pb = parse_number(sc.paper_a), parse_number(sc.paper_b)
    sign = _better(table, col)
    if pa is not None and pb is not None:
        if kind == "beats":
            sc.paper_holds = sign * (pa - pb) > 0
            if pa == pb:
                sc.paper_note = "tie as printed"
        elif kind == "equal":
            sc.paper_holds = _rel_close(pa, pb, claim.rel_tolerance, claim.abs_tolerance)
        elif kind == "ratio":
            expected = float(claim.expected)
            ratio = pa / pb if pb else math.inf
            sc.paper_holds = _rel_close(ratio, expected, claim.rel_tolerance, None)
            sc.paper_note = f"printed ratio {ratio:.3g} (expected {expected:g})"
    if measure_fn is None:
        return sc

    ma = measure_fn(a, cond, col) if row_a.card else None
    mb = measure_fn(b, cond, col) if row_b.card else None
    sc.n_a = ma.n if ma else 0
    sc.n_b = mb.n if mb else 0
    sc.mean_a = ma.mean if ma else None
    sc.mean_b = mb.mean if mb else None
    if row_a.card is None:
        sc.verdict, sc.note = UNAVAILABLE, f"row {a} is published only"
        return sc
    if not sc.n_a or (row_b.card and not sc.n_b):
        missing = [r for r, m, card in ((a, ma, row_a.card), (b, mb, row_b.card)) if card and not (m and m.n)]
        sc.verdict = NOT_RUN if all(not (m and m.problems) for m in (ma, mb)) else UNAVAILABLE
        sc.note = "no reproduced number for " + ", ".join(missing)
        return sc

    if kind == "equal":
        ok = _rel_close(sc.mean_a, sc.mean_b, claim.rel_tolerance, claim.abs_tolerance)
        sc.verdict = REPRODUCED if ok else NOT_REPRODUCED
        sc.test = "means within tolerance"
        return sc
    if kind == "ratio":
        ratio = sc.mean_a / sc.mean_b if sc.mean_b else math.inf
        ok = _rel_close(ratio, float(claim.expected), claim.rel_tolerance, None)
        sc.verdict = REPRODUCED if ok else NOT_REPRODUCED
        sc.test = f"ratio of means {ratio:.3g}"
        return sc

    # beats
    if row_b.card is None:  # against a printed number
        sc.mean_b = pb
        if pb is None:
            sc.verdict, sc.note = UNAVAILABLE, f"row {b} prints no number"
            return sc
        diff = sign * (sc.mean_a - pb)
        if sc.n_a < 2:
            sc.verdict, sc.test = N_TOO_SMALL, "n too small (one-sample t-test needs n >= 2)"
            sc.note = "direction holds" if diff > 0 else "direction reversed"
            return sc
        sc.p, sc.test = _one_sample(ma.values, pb, sign), f"one-sample t-test against the printed {pb:g}"
    else:
        diff = sign * (sc.mean_a - sc.mean_b)
        if sc.n_a < 2 or sc.n_b < 2:
            sc.verdict, sc.test = N_TOO_SMALL, "n too small (Welch t-test needs n >= 2 per side)"
            sc.note = "direction holds" if diff > 0 else ("tie" if diff == 0 else "direction reversed")
            return sc
        sc.p, sc.test = _welch(ma.values, mb.values, sign), "Welch t-test, one-sided"
    if sc.p is None:  # no spread on either side: a deterministic comparison
        sc.test += " (no spread: compared directly)"
        sc.verdict = REPRODUCED if diff > 0 else NOT_REPRODUCED
    elif sc.p < ALPHA:
        sc.verdict = REPRODUCED
    elif diff > 0:
        sc.verdict = NOT_SIGNIFICANT
    else:
        sc.verdict = NOT_REPRODUCED
        # reversed but not significantly so: still "not reproduced" (the claim's direction fails)
    return sc


def _welch(a: list[float], b: list[float], sign: int) -> float | None:
    from scipy import stats

    if _spread(a) == 0 and _spread(b) == 0:
        return None
    alt = "greater" if sign > 0 else "less"
    p = float(stats.ttest_ind(a, b, equal_var=False, alternative=alt).pvalue)
    return None if math.isnan(p) else p


def _one_sample(a: list[float], value: float, sign: int) -> float | None:
    from scipy import stats

    if _spread(a) == 0:
        return None
    alt = "greater" if sign > 0 else "less"
    p = float(stats.ttest_1samp(a, value, alternative=alt).pvalue)
    return None if math.isnan(p) else p


def _spread(xs: list[float]) -> float:
    return max(xs) - min(xs) if xs else 0.0


def _status_check(table, claim, cond, status_fn) -> SubCheck:
    sc = SubCheck(claim.id, "status", "", cond, claim.row, None)
    printed = table.row(claim.row).published_value(cond, table.columns[0].id)
    sc.paper_a = printed
    expected = str(claim.expected).lower()
    sc.paper_holds = printed is not None and printed.lower() == expected
    if status_fn is None:
        return sc
    statuses = status_fn(claim.row, cond)
    sc.n_a = len(statuses)
    if not statuses:
        sc.verdict = NOT_RUN
    elif any(s.lower() == expected for s in statuses):
        sc.verdict = REPRODUCED
        sc.note = ", ".join(statuses)
    else:
        sc.verdict = NOT_REPRODUCED
        sc.note = "statuses: " + ", ".join(statuses) + " (memory depends on the hardware and the scale)"
    return sc


def _check_margin(table: Table, claim: Claim, res: ClaimResult) -> None:
    """A stated margin ("by 0.24 dB") against the printed numbers: equal up to rounding."""
    stated = float(claim.by)
    notes, ok = [], True
    for sc in res.checks:
        pa, pb = parse_number(sc.paper_a), parse_number(sc.paper_b)
        if pa is None or pb is None:
            continue
        d = max(printed_decimals(sc.paper_a) or 0, printed_decimals(sc.paper_b) or 0)
        diff = _better(table, sc.column) * (pa - pb)
        tol = 10.0 ** -d + 1e-9  # two rounded numbers: their difference is off by < one last digit
        good = abs(diff - stated) <= tol
        ok &= good
        notes.append(f"text says {claim.by}, printed {sc.paper_a} - {sc.paper_b} = {diff:.{d}f}"
                     + ("" if good else " (differs beyond rounding)"))
        if sc.mean_a is not None and sc.mean_b is not None:
            sc.note = (sc.note + "; " if sc.note else "") + \
                f"reproduced margin {_better(table, sc.column) * (sc.mean_a - sc.mean_b):+.{d}f}"
    res.margin_note = "; ".join(notes)
    res.margin_ok = ok if notes else None
