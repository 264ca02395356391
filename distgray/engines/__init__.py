"""What jobs drive: the interface (``base``) and the built-in cluster behind it (``cluster``)."""
