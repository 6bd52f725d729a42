"""`python -m eval ARGS`: lm-eval's command line with the `crawl2score` model registered (see eval/cli.py)."""

import sys

from crawl2score.eval.cli import run_lm_eval_cli

sys.exit(run_lm_eval_cli(sys.argv[1:]))
