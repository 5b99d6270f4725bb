"""Analyses of a trained model (scanpy style: take data or model, write named keys, return tables)."""
