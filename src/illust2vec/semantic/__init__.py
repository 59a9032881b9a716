"""Semantic tools over collections: morphing between illustrations, attribute (tag-direction) queries."""
