"""Samplers: what turns a trained network into token ids."""
