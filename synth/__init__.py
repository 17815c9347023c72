"""synthstudio's bottom layer: audio I/O, features, pitch, DSP, data, generators and the trainer.

`synth` imports nothing from `vocoders`, `latent` or `studio`.
"""

__version__ = "0.1.0"
