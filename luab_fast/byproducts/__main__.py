import sys

from .._cli import run
from .cli import main

sys.exit(run(main))
