"""The fault tests reuse the trainer's fixtures (a small token directory)."""

from __future__ import annotations

from tests.train.conftest import tokens_dir  # noqa: F401  (a fixture, used by name)
