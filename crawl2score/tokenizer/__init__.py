"""The tokenizer and tokens stages: a byte-level BPE of 102,400 entries and the corpus as uint32 shards."""
