"""The one place the version is defined for both distributions (bagcompile pins to it)."""

__version__ = "0.1.0"

# Version of the model-file contract (metadata key ``bagcompile_format``). The runtime refuses
# files written with a newer format than it understands.
FORMAT_VERSION = 1
