"""crawl2score: Common Crawl to a scored DeepSeek-V3-style model, orchestrated as Prefect flows."""

__version__ = "0.1.0"
