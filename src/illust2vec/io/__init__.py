"""Reading images and listing files; atomic result files; result writers (JSON/JSONL/CSV/Parquet/NumPy)."""
