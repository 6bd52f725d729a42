"""Overrides that cut the `tiny` pipeline to a minute or two on 2 cores, shared by the tests that run it
whole (in-process and through deployment workers)."""

FAST_RUN = [
    "data.sample_pages=600",
    "train.steps=4",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "eval.limit=1",
    "eval.max_new_tokens=8",
    "eval.benchmarks=[math500]",
    "eval.bpb_max_bytes=5000",
]
