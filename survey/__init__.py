"""stability-survey: large statistical tests of the stability of deep-learning image reconstruction."""

__version__ = "0.1.0"
