"""The package's public names stay what they are, whatever was imported before them."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_build_module_does_not_hide_conformance_build() -> None:
    # A fresh interpreter: the bug needs `conformance.build` (the module) imported before `conformance.build` (the
    # function) is first used, as the notebook does after any other code imported the module.
    code = (
        "import conformance\n"
        "from conformance.build import build_baseline\n"
        "import conformance.scoring\n"
        "assert callable(conformance.build), conformance.build\n"
        "assert conformance.build.__module__ == 'conformance.api', conformance.build\n"
        "from conformance import build\n"
        "assert build is conformance.build\n"
        "import sys\n"
        "assert sys.modules['conformance.build'].build_baseline is build_baseline\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
