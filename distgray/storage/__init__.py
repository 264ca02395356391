"""Where files live: local paths, or objects behind any fsspec URL (``s3://``, ``gs://``, ``memory://``...)."""
