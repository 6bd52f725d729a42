"""lm-eval's own command line with the `crawl2score` model registered and our tasks on the include path.

lm-eval 0.4.13 finds models only in its registry (filled by `@register_model` on import and its own
built-in table); it does not read the `lm_eval.models` entry-point group. So `lm_eval --model crawl2score`
fails on its own; `crawl2score eval -- ARGS` and `python -m eval ARGS` import `eval.lm` first and then
hand ARGS to lm-eval unchanged (adding `--include_path eval/yaml` unless given).
"""

from __future__ import annotations

import sys
from pathlib import Path

YAML_DIR = Path(__file__).resolve().parent / "yaml"


def run_lm_eval_cli(argv: list[str]) -> int:
    from lm_eval.__main__ import cli_evaluate

    import crawl2score.eval.lm  # noqa: F401 - registers the `crawl2score` model

    argv = list(argv)
    is_run = not argv or argv[0] == "run" or argv[0].startswith("-")
    if is_run and "--include_path" not in argv:
        argv += ["--include_path", str(YAML_DIR)]
    old = sys.argv
    sys.argv = ["lm_eval", *argv]
    try:
        cli_evaluate()
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    finally:
        sys.argv = old
    return 0
