"""Where criterion's results are: the first argument, $CRITERION_HOME, or
$CARGO_TARGET_DIR/criterion (target/criterion). Shared by bench_report.py and
contention_plot.py."""

import os
import sys
from pathlib import Path


def criterion_dir():
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    if os.environ.get("CRITERION_HOME"):
        return Path(os.environ["CRITERION_HOME"])
    return Path(os.environ.get("CARGO_TARGET_DIR", "target")) / "criterion"
