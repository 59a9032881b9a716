"""One sub-package or module per model family (i2v, wd, effnet); each defines its records and loader."""
