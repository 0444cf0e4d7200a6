import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The workspace tools live in tasks/ (scripts, not an installed package).
if str(REPO / "tasks") not in sys.path:
    sys.path.insert(0, str(REPO / "tasks"))
