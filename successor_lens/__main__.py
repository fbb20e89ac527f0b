"""`python -m successor_lens ...` (and `torchrun ... -m successor_lens train ...`): the CLI."""

import sys

from successor_lens.cli.main import main

sys.exit(main())
