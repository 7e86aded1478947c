"""Identification by shape: find each implant on a film and straighten it (canonical), measure it
(descriptor), embed its crop (network), and compose one vector per implant for matching (identifier)."""
