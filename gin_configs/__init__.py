"""The run and model gin files. A package (not a bare directory) so that an `include 'gin_configs/...'` resolves
from any working directory: gin's package reader looks the directory up as a Python package, and on a namespace
package (no __init__.py) it fails with "expected str, bytes or os.PathLike object, not NoneType" before it tries
the search paths vlm.gin_cli adds."""
