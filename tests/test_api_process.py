"""The API process stays small: it sends tasks by name and never loads TensorFlow."""

from __future__ import annotations

import subprocess
import sys

from reviewscore.core.settings import REPO_ROOT


def test_importing_the_api_loads_neither_tensorflow_nor_keras() -> None:
    check = (
        "import sys, api.main\n"
        "loaded = {'tensorflow', 'keras', 'worker', 'training'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
