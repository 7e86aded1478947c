"""Adapters to the systems outside Raiox: object storage, safe fetch, image decoding, the encoder, Jotform."""
