"""Entry point: ``python 9001.py train|val|detect|benchmark|export [options]`` (see ``--help``)."""

import sys
from pathlib import Path

# Runs from a plain checkout too (without `pip install -e .`): the package lives in src/.
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from yolov9001.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
