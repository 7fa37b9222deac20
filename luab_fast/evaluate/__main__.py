import sys

from .. import _cli
from .cli import main

sys.exit(_cli.run(main))
