"""Inference: using finished runs.

Contract: `predict` runs an adapter over a store and writes official output
files; `ensemble` combines runs' predictions; `cosine` is the zero-shot cosine
baseline of separately encoded pairs; `serving` turns raw text into
predictions of many runs with one backbone pass; `server` is its HTTP
service; `export` writes a SavedModel. Nothing here trains.
"""
