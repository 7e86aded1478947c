"""The embed step: X-rays become embeddings, each matched to its top-k implant systems; case → ready."""
