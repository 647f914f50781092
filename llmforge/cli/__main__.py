"""`python -m llmforge.cli ...`, the same as the `llmforge` console script."""
import sys

from llmforge.cli import main

sys.exit(main())
