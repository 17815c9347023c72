"""Error types a user can act on.

Every error raised for bad input derives from `SynthStudioError`; the CLI prints its message on one
line and exits with code 2. Messages name the offending path, spec or kind.
"""


class SynthStudioError(Exception):
    """Base class for errors caused by input a user can fix (exit code 2 in the CLI)."""


class AudioError(SynthStudioError):
    """Unreadable, empty, non-finite or otherwise unusable audio."""


class SpecMismatchError(SynthStudioError):
    """Features made under one FeatureSpec handed to a consumer that expects another."""


class CheckpointError(SynthStudioError):
    """A checkpoint that is missing, not safetensors, truncated, or inconsistent."""


class UnknownKindError(SynthStudioError):
    """A model kind that is not in the registry."""


class ConfigError(SynthStudioError):
    """A configuration value that is out of range or of the wrong type."""
