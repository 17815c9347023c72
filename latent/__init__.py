"""Latent controls, interpolation, text conditioning and metrics. Imports `synth` and `vocoders`."""
