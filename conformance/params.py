"""Checks of the parameters that enter from outside (CLI options, API arguments), in one light module.

Each raises ``ValueError`` naming the parameter, the allowed range and the value received.
"""

from __future__ import annotations

from conformance import defaults


def check_alpha(alpha: float) -> float:
    """Validate alpha; returns it as a float."""
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return float(alpha)


def check_fdr(q: float) -> float:
    """Validate a target false discovery rate; returns it as a float."""
    if not isinstance(q, (int, float)) or isinstance(q, bool) or not 0.0 < float(q) < 1.0:
        raise ValueError(f"fdr (the target false discovery rate q) must be in (0, 1), got {q!r}")
    return float(q)


def check_calibration_method(calibration_method: str, delta: float | None) -> str:
    """Validate a calibration method (a key of :data:`CALIBRATION_METHODS`) against ``delta``."""
    if calibration_method not in defaults.CALIBRATION_METHODS:
        raise ValueError(f"calibration_method must be one of {', '.join(defaults.CALIBRATION_METHODS)}, "
                         f"got {calibration_method!r}")
    if delta is not None and calibration_method == "weighted":
        raise ValueError("the calibration-conditional guarantee (delta) needs calibration_method 'sample': its "
                         "Beta law holds for one exchangeable calibration score per prompt "
                         "(build --calibration-method sample)")
    return calibration_method


def check_person(name: object, role: str = "the approver's name") -> str:
    """A person's name as it is recorded (surrounding white space dropped): text, not blank, one line, no control
    characters (a terminal escape in a name could disguise who approved). Raises ``ValueError``."""
    import unicodedata

    if not isinstance(name, str):
        raise ValueError(f"{role} must be text, got {type(name).__name__}")
    if not name.strip():
        raise ValueError(f"{role} is empty: give who it is, e.g. --by 'J. Doe'")
    bad = sorted({c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")})
    if bad:
        raise ValueError(f"{role} {name.strip()!r} holds control or invisible characters "
                         f"({', '.join(repr(c)[1:-1] for c in bad)}); type it plainly")
    return name.strip()
