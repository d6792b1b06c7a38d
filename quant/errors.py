"""The one error a user can cause in quant/: a 4-bit file or a model that does not fit. quant never imports
minibert, so it has its own type; a ValueError, so callers that caught ValueError before still do."""


class QuantError(ValueError):
    """A 4-bit file or request that cannot be used; the message names the file and key and says what to do."""
