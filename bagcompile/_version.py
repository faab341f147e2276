"""bagcompile's version: the same as the runtime's (one version for both distributions)."""
from bagcompile_runtime._version import FORMAT_VERSION, __version__  # noqa: F401
