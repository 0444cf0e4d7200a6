"""``python -m yolov10_qat``: see :mod:`yolov10_qat.cli`."""

import sys

from .cli import main

sys.exit(main())
