"""shoal: collect social-media posts continuously and download their images and videos."""

__version__ = "0.1.0"
