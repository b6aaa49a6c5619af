"""``selective_scan``: one entry point, several backends. (Interim: only ``reference``; the
``chunked`` and ``cuda`` backends are being added.)"""

from __future__ import annotations

from .reference import selective_scan_reference

BACKENDS = {"reference": selective_scan_reference}


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto"):
    fn = BACKENDS["reference"] if backend in ("auto", "reference") else BACKENDS[backend]
    return fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
              delta_softplus=delta_softplus, return_last_state=return_last_state)
