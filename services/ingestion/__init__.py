"""Ingestion: turns a market feed into tick batches on the bus and keeps the instrument master."""
