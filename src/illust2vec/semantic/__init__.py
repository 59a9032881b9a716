"""Semantic operations on illustrations: explanations, tag-guided editing and generation, morphing, attribute queries."""
