"""bytefreezer: multi-tenant ingestion pipeline."""

__version__ = "0.1.0"
