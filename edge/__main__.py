"""`python -m edge --config config/dev/edge.toml`"""

import argparse
from pathlib import Path

from edge.app import run

parser = argparse.ArgumentParser(prog="python -m edge")
parser.add_argument("--config", type=Path, required=True)
run(parser.parse_args().config)
