"""Recipes, one module per source project; training/registry.py joins them into one table."""
