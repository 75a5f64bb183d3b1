"""What a caller can ask of a sample: known tokens (anchors, templates, prefixes, lengths) and attributes."""
