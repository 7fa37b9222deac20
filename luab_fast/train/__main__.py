import sys

from .. import _cli
from .run import main

sys.exit(_cli.run(main))
