"""wansweep: Wan 2.6 image-to-video dataset generation and A/B sweeps on fal.ai."""

__version__ = "0.1.0"
