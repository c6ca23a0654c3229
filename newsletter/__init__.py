"""newsletter: a personalized daily digest of new research papers."""

__version__ = "0.3.0"
