"""Mel-to-waveform vocoders. Imports `synth` only."""
