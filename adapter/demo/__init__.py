"""Synthetic, entirely fictional demo data: deterministic for a seed,
streamed into the database in batches."""

from adapter.demo.children import REFERENCE_DATE
from adapter.demo.writer import count_children, load_demo_data

__all__ = ["REFERENCE_DATE", "count_children", "load_demo_data"]
