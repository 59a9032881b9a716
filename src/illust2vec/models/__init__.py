"""Models: spec records, the image model, tag tables and thresholds, the store, fetching, families, the catalog."""
