"""Processes that consume commands and turn runtime outcomes into events."""
