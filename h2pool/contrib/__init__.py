"""Integrations with other libraries; each needs its extra (``h2pool[requests]``)."""
