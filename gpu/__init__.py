"""The GPU check: a bundle for the offline GPU machine and the script that runs there.

See gpu/README.md. The modules are stdlib-only scripts (``python3 gpu/bundle.py ...``); this
file only makes them importable as ``gpu.bundle`` etc. for the tests.
"""
