"""trustspace: a privacy-preserving trusted data exchange node on SM2/SM3/SM4."""

__version__ = "0.1.0"
