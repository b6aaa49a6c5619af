"""Selective scan: every backend against ``reference`` (values and gradients), the official
fixture, backend resolution, and input validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssmrepro.ssm import chunked as chunked_mod
from ssmrepro.ssm.chunked import selective_scan_chunked
from ssmrepro.ssm.reference import selective_scan_reference
from ssmrepro.ssm.scan import (
    BACKENDS,
    available_backends,
    resolve_backend,
    scan_backend,
    selective_scan,
)

# an `out=` of the wrong shape is resized by torch with a warning (and silently wrong once torch
# stops resizing): an error here
pytestmark = pytest.mark.filterwarnings("error:An output with one or more elements was resized")

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "selective_scan_dev.pt"
SHARED_FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "selective_scan_dev.pt"

RUNNABLE = [name for name, (ok, _) in available_backends().items() if ok and name in ("chunked", "cuda")]
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(b, d, n, length, bc="var", groups=1, with_z=True, with_D=True, with_bias=True,
                dtype=torch.float64, seed=0, delta_scale=0.5):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    inp = {"u": r(b, d, length), "delta": delta_scale * r(b, d, length),
           "A": -torch.exp(0.5 * r(d, n).double()).to(dtype)}
    if bc == "const":
        inp["B"], inp["C"] = r(d, n), r(d, n)
    elif bc == "var":
        inp["B"], inp["C"] = r(b, n, length), r(b, n, length)
    else:
        inp["B"], inp["C"] = r(b, groups, n, length), r(b, groups, n, length)
    inp["D"] = r(d) if with_D else None
    inp["z"] = r(b, d, length) if with_z else None
    inp["delta_bias"] = 0.5 * r(d) if with_bias else None
    return inp


def run(fn, inp, softplus=True, last=True, grads=True, **kw):
    """Forward (and backward through a fixed random projection); returns dict of results."""
    leaves = {k: (v.clone().requires_grad_(grads) if v is not None else None) for k, v in inp.items()}
    res = fn(**leaves, delta_softplus=softplus, return_last_state=last, **kw)
    out, state = res if last else (res, None)
    result = {"out": out.detach()}
    if state is not None:
        result["state"] = state.detach()
    if grads:
        g = torch.Generator().manual_seed(99)
        w = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
        loss = (out * w).sum()
        if state is not None:
            loss = loss + (state * torch.randn(state.shape, generator=g, dtype=torch.float64)
                           .to(state.dtype)).sum()
        loss.backward()
        for k in GRAD_NAMES:
            if leaves.get(k) is not None:
                result["grad_" + k] = leaves[k].grad
    return result


def assert_match(got, want, rtol):
    assert got.keys() == want.keys()
    for k in want:
        a, b = got[k], want[k]
        if a is None or b is None:  # e.g. no gradient reaches C when only the state is used
            assert (a is None or not a.abs().any()) and (b is None or not b.abs().any()), k
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, k
        scale = b.abs().max().clamp_min(1e-30)
        err = ((a.double() - b.double()).abs().max() / scale).item()
        assert err <= rtol, f"{k}: relative error {err:.3g} > {rtol:g}"


# ---- the official fixture ------------------------------------------------------------------

@pytest.fixture(scope="module")
def scan_fixture():
    return torch.load(FIXTURE, weights_only=True)


def test_fixture_copy_matches_shared():
    if not SHARED_FIXTURE.exists():
        pytest.skip("../shared/fixtures not present")
    assert FIXTURE.read_bytes() == SHARED_FIXTURE.read_bytes()


@pytest.mark.parametrize("backend", ["reference", "chunked", "cuda"])
@pytest.mark.parametrize("case", ["var_BC", "grouped_BC_g2", "grouped_BC_g1_no_z", "const_BC_plain"])
def test_fixture(scan_fixture, backend, case):
    ok, why = available_backends()[backend]
    if not ok:
        pytest.skip(why)
    c = scan_fixture["cases"][case]
    inputs = dict(c["inputs"])
    if backend == "cuda":  # no float64 kernel: compare in float32 against the official float32 run
        inputs = {k: (v.float().cuda() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        res = selective_scan(**inputs, backend="cuda")
        out = res[0] if inputs["return_last_state"] else res
        torch.testing.assert_close(out.cpu(), c["official_fp32_out"], rtol=1e-4, atol=1e-5)
        return
    res = selective_scan(**inputs, backend=backend)
    if inputs["return_last_state"]:
        out, last = res
        torch.testing.assert_close(last, c["last_state"], rtol=1e-9, atol=1e-12)
    else:
        out = res
        assert c["last_state"] is None
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, c["out"], rtol=1e-9, atol=1e-12)


def test_fixture_float32_matches_official(scan_fixture):
    """The unmodified (float32) mamba-ssm function vs our float32 computation."""
    for case in scan_fixture["cases"].values():
        inputs = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in case["inputs"].items()}
        for backend in ("reference", "chunked"):
            res = selective_scan(**inputs, backend=backend)
            out = res[0] if inputs["return_last_state"] else res
            assert out.dtype == torch.float32
            torch.testing.assert_close(out, case["official_fp32_out"], rtol=1e-5, atol=2e-5)


# ---- chunked == reference ------------------------------------------------------------------

@st.composite
def scan_case(draw):
    b = draw(st.integers(1, 2))
    d = draw(st.sampled_from([1, 2, 3, 4, 6]))
    n = draw(st.integers(1, 4))
    length = draw(st.integers(1, 45))
    bc = draw(st.sampled_from(["const", "var", "grouped"]))
    groups = draw(st.sampled_from([g for g in (1, 2, 3) if d % g == 0])) if bc == "grouped" else 1
    flags = {k: draw(st.booleans()) for k in ("with_z", "with_D", "with_bias")}
    softplus = draw(st.booleans())
    last = draw(st.booleans())
    chunk = draw(st.sampled_from([None, 1, 2, 3, 7]))
    budget = draw(st.sampled_from([chunked_mod.DEFAULT_BUDGET, 1, 40, 200]))
    seed = draw(st.integers(0, 10_000))
    return dict(b=b, d=d, n=n, length=length, bc=bc, groups=groups, flags=flags, softplus=softplus,
                last=last, chunk=chunk, budget=budget, seed=seed)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scan_case(), st.sampled_from([torch.float32, torch.float64]))
def test_chunked_equals_reference_random(case, dtype):
    inp = make_inputs(case["b"], case["d"], case["n"], case["length"], case["bc"], case["groups"],
                      dtype=dtype, seed=case["seed"], **case["flags"])
    if not case["softplus"]:  # without softplus keep delta positive, as the models do
        inp["delta"] = inp["delta"].abs()
        if inp["delta_bias"] is not None:
            inp["delta_bias"] = inp["delta_bias"].abs()
    want = run(selective_scan_reference, inp, case["softplus"], case["last"])
    got = run(selective_scan_chunked, inp, case["softplus"], case["last"], chunk=case["chunk"],
              budget=case["budget"])
    assert_match(got, want, 1e-10 if dtype == torch.float64 else 2e-4)


@pytest.mark.parametrize("shape", [
    dict(b=1, d=4, n=2, length=1),     # L = 1
    dict(b=2, d=4, n=1, length=17),    # N = 1
    dict(b=1, d=6, n=4, length=1000),  # several superblocks and chunks (small budget below)
])
@pytest.mark.parametrize("bc,groups", [("var", 1), ("grouped", 1), ("grouped", 2), ("const", 1)])
def test_chunked_equals_reference_edges(shape, bc, groups):
    inp = make_inputs(**shape, bc=bc, groups=groups)
    want = run(selective_scan_reference, inp)
    for budget in (chunked_mod.DEFAULT_BUDGET, 6 * 4 * 50):
        assert_match(run(selective_scan_chunked, inp, budget=budget), want, 1e-10)


@pytest.mark.parametrize("with_z,with_D,with_bias,softplus,last", [
    (False, False, False, False, False),
    (True, False, False, True, True),
    (False, True, True, False, True),
])
def test_chunked_flags_float32(with_z, with_D, with_bias, softplus, last):
    inp = make_inputs(2, 4, 3, 70, "var", with_z=with_z, with_D=with_D, with_bias=with_bias,
                      dtype=torch.float32, seed=3)
    inp["delta"] = inp["delta"].abs()
    want = run(selective_scan_reference, inp, softplus, last)
    got = run(selective_scan_chunked, inp, softplus, last, chunk=8)
    assert_match(got, want, 2e-4)


@pytest.mark.parametrize("bc,groups", [("var", 1), ("grouped", 2), ("const", 1)])
def test_chunked_results_do_not_share_the_kept_work_buffers(bc, groups):
    """Work buffers are kept between calls (``_Workspace``): what a call returns (outputs,
    last state, gradients) must not be one of them, so a later call cannot change it."""
    first = run(selective_scan_chunked, make_inputs(2, 4, 3, 300, bc, groups, seed=1), budget=300)
    kept = {k: v.clone() for k, v in first.items()}
    run(selective_scan_chunked, make_inputs(2, 4, 3, 300, bc, groups, seed=2), budget=300)
    for k, v in first.items():
        assert torch.equal(v, kept[k]), k
    assert chunked_mod._work.buffers  # kept, on this thread
    chunked_mod.clear_workspace()
    assert not chunked_mod._work.buffers


def test_chunked_in_two_threads_at_once_equals_reference():
    """One set of work buffers per thread: two threads scanning at once do not mix them."""
    import threading

    cases = [make_inputs(1, 6, 4, 700, "var", seed=s) for s in (11, 12)]
    want = [run(selective_scan_reference, c) for c in cases]
    got: list = [None, None]
    errors: list = []

    def work(i):
        try:
            for _ in range(3):
                got[i] = run(selective_scan_chunked, cases[i], budget=6 * 4 * 40)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for g, w in zip(got, want):
        assert_match(g, w, 1e-10)


def test_chunked_gradcheck():
    inp = make_inputs(1, 2, 2, 9, "grouped", groups=2, seed=5)
    names = [k for k in GRAD_NAMES if inp[k] is not None]

    def f(*tensors):
        kw = dict(zip(names, tensors))
        out, last = selective_scan_chunked(**kw, delta_softplus=True, return_last_state=True,
                                           chunk=2, budget=2 * 2 * 4)
        return out, last

    assert torch.autograd.gradcheck(f, [inp[k].clone().requires_grad_() for k in names])


def test_chunked_partial_requires_grad():
    inp = make_inputs(1, 4, 3, 30, "var", seed=1)
    for only in GRAD_NAMES:
        leaves = {k: v.clone() for k, v in inp.items()}
        leaves[only].requires_grad_()
        ref_leaves = {k: v.clone() for k, v in inp.items()}
        ref_leaves[only].requires_grad_()
        (selective_scan_chunked(**leaves, delta_softplus=True, chunk=4) ** 2).sum().backward()
        (selective_scan_reference(**ref_leaves, delta_softplus=True) ** 2).sum().backward()
        torch.testing.assert_close(leaves[only].grad, ref_leaves[only].grad, rtol=1e-10, atol=1e-12)


def test_chunked_extreme_decays_are_finite():
    """delta * A far below -100 per step: exp() underflows to 0, exactly as in the plain loop."""
    inp = make_inputs(1, 3, 4, 200, "var", seed=2, delta_scale=1.0)
    inp["A"] = inp["A"] * 40
    inp["delta"] = inp["delta"] * 20
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 2e-4)):
        cast = {k: (v.to(dtype) if v is not None else None) for k, v in inp.items()}
        want = run(selective_scan_reference, cast)
        got = run(selective_scan_chunked, cast, chunk=16)
        for v in got.values():
            assert torch.isfinite(v).all()
        assert_match(got, want, tol)


def test_chunked_noncontiguous_and_half_inputs():
    inp = make_inputs(2, 4, 3, 25, "var", dtype=torch.float32, seed=4)
    inp_t = dict(inp)
    inp_t["u"] = inp["u"].transpose(1, 2).contiguous().transpose(1, 2)  # same values, odd strides
    inp_t["B"] = inp["B"].transpose(1, 2).contiguous().transpose(1, 2)
    torch.testing.assert_close(selective_scan_chunked(**inp_t, delta_softplus=True),
                               selective_scan_reference(**inp, delta_softplus=True))
    for dtype in (torch.bfloat16, torch.float16):
        half = {k: (v.to(dtype) if v is not None else None) for k, v in inp.items()}
        out, last = selective_scan_chunked(**half, delta_softplus=True, return_last_state=True)
        ref_out, ref_last = selective_scan_reference(**half, delta_softplus=True, return_last_state=True)
        assert out.dtype == dtype and last.dtype == torch.float32
        torch.testing.assert_close(out, ref_out)
        torch.testing.assert_close(last, ref_last, rtol=1e-5, atol=1e-5)


def test_chunked_plan_memory_is_bounded():
    """The work buffers depend on the budget, not on the length: L = 65536, d = 96..384."""
    for d in (96, 192, 384):
        per_step = d * 16
        S, T, nc = chunked_mod._plan(65536, per_step, chunked_mod.DEFAULT_BUDGET, None)
        assert S * T * nc >= 65536
        assert T * nc * per_step <= chunked_mod.DEFAULT_BUDGET + T * per_step
        assert S * T * nc - 65536 < S * (T + 1)  # padding: less than one chunk per superblock


def test_chunked_long_sequence_forward():
    """A longer sequence through several superblocks: the start against the reference, the rest
    by causality (the first half alone, with another plan, gives the same outputs)."""
    inp = make_inputs(1, 8, 4, 6000, "var", dtype=torch.float32, with_z=False, with_D=False,
                      with_bias=False, seed=7)

    def head(k):
        return {name: (v[..., :k] if v is not None and v.dim() == 3 else v) for name, v in inp.items()}

    with torch.no_grad():
        out, last = selective_scan_chunked(**inp, delta_softplus=True, return_last_state=True,
                                           budget=8 * 4 * 700)
        assert torch.isfinite(out).all() and torch.isfinite(last).all()
        torch.testing.assert_close(out[..., :50], selective_scan_reference(**head(50), delta_softplus=True))
        o_half = selective_scan_chunked(**head(3000), delta_softplus=True, budget=8 * 4 * 500)
        torch.testing.assert_close(out[..., :3000], o_half, rtol=1e-5, atol=1e-5)


def test_empty_length():
    inp = make_inputs(2, 3, 2, 0, "var")
    out, last = selective_scan_chunked(**inp, return_last_state=True)
    ref_out, ref_last = selective_scan_reference(**inp, return_last_state=True)
    assert out.shape == ref_out.shape == (2, 3, 0)
    torch.testing.assert_close(last, ref_last)


# ---- backends, resolution ------------------------------------------------------------------

def test_auto_resolution_and_override():
    u = torch.zeros(1, 2, 3)
    assert resolve_backend("auto", u) == "chunked"
    assert resolve_backend("reference", u) == "reference"
    with scan_backend("reference"):
        assert resolve_backend("auto", u) == "reference"
        with scan_backend("skip"):
            assert resolve_backend("auto", u) == "skip"
        with scan_backend("auto"):
            assert resolve_backend("auto", u) == "chunked"
        assert resolve_backend("auto", u) == "reference"
    assert resolve_backend("auto", u) == "chunked"
    with pytest.raises(ValueError, match="unknown scan backend 'nope'"):
        with scan_backend("nope"):
            pass
    inp = make_inputs(1, 2, 2, 5, "var")
    with pytest.raises(ValueError, match="unknown scan backend"):
        selective_scan(**inp, backend="nope")


def test_auto_uses_override_for_real():
    inp = make_inputs(1, 2, 2, 5, "var")
    with scan_backend("skip"):
        assert not selective_scan(**inp).abs().any()
    torch.testing.assert_close(selective_scan(**inp), selective_scan_reference(**inp))


def test_available_backends_reports_cuda():
    avail = available_backends()
    assert {"reference", "chunked", "cuda", "skip"} <= set(avail)
    assert avail["reference"][0] and avail["chunked"][0]
    ok, why = avail["cuda"]
    assert isinstance(why, str) and why
    if not ok:
        assert "mamba" in why.lower() or "cuda" in why.lower()
        with pytest.raises(RuntimeError, match="'cuda'"):
            selective_scan(**make_inputs(1, 2, 2, 5, "var", dtype=torch.float32), backend="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("backend", RUNNABLE)
def test_gpu_backends_match_reference(backend):
    inp = make_inputs(2, 6, 4, 100, "grouped", groups=2, dtype=torch.float32, seed=11)
    want = run(selective_scan_reference, inp)
    gpu = {k: (v.cuda() if v is not None else None) for k, v in inp.items()}
    got = run(BACKENDS[backend], gpu)
    assert_match({k: v.cpu() for k, v in got.items()}, want, 1e-3)


def test_skip_backend_shapes():
    inp = make_inputs(2, 3, 4, 7, "var", dtype=torch.float32)
    out, last = selective_scan(**inp, return_last_state=True, backend="skip")
    assert out.shape == (2, 3, 7) and last.shape == (2, 3, 4) and not out.abs().any()


# ---- validation ----------------------------------------------------------------------------

BAD = [
    ("u", dict(u=torch.randn(2, 6)), "u must be (batch, d, length)"),
    ("delta", dict(delta=torch.randn(2, 6, 32)), "delta must be (batch, d, length) = (2, 6, 33)"),
    ("A", dict(A=torch.randn(5, 4)), "A must be (d, n) with d=6"),
    ("B", dict(B=torch.randn(2, 5, 33)), "B must be (d, n), (batch, n, length) or (batch, groups, n, "
                                        "length) with groups dividing d=6"),
    ("B", dict(B=torch.randn(2, 4, 4, 33)), "B must be"),
    ("C", dict(C=torch.randn(6, 5)), "C must be"),
    ("C", dict(C=torch.randn(3, 4, 33)), "C must be"),
    ("D", dict(D=torch.randn(5)), "D must be (d,) = (6,)"),
    ("z", dict(z=torch.randn(2, 6, 34)), "z must be (batch, d, length)"),
    ("delta_bias", dict(delta_bias=torch.randn(6, 1)), "delta_bias must be (d,)"),
    ("u", dict(u=torch.ones(2, 6, 33, dtype=torch.long)), "u must be a real floating-point tensor"),
    ("A", dict(A=torch.ones(6, 4, dtype=torch.complex64)), "A must be a real floating-point tensor"),
    ("B", dict(B=None), "B is required"),
    ("D", dict(D=[1.0] * 6), "D must be a torch.Tensor"),
]


@pytest.mark.parametrize("name,override,message", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_names_the_argument(name, override, message):
    inp = make_inputs(2, 6, 4, 33, "var", dtype=torch.float32)
    inp.update(override)
    with pytest.raises(ValueError) as err:
        selective_scan(**inp)
    text = str(err.value)
    assert text.startswith("selective_scan: ") and f" {name} " in text
    assert message in text
    if name in ("B", "C") and "required" not in message:
        assert "got (" in text


def test_bad_device_names_the_argument():
    inp = make_inputs(2, 6, 4, 33, "var", dtype=torch.float32)
    inp["z"] = inp["z"].to("meta")
    with pytest.raises(ValueError, match="selective_scan: z is on meta but u is on cpu"):
        selective_scan(**inp)
