"""The data stage: Common Crawl WARC to a deduplicated English and Chinese corpus, on datatrove."""
