import sys
from pathlib import Path

# toy_assignment.py sits beside the tests; make it importable under any import mode.
sys.path.insert(0, str(Path(__file__).parent))
