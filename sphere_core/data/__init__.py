"""Question data: ingest + validation of question files (``ingest``, ``readers``), the packaged
builtin training sets (``builtin/``) and evaluation benchmarks (``benchmark_files`` names them,
``benchmark_sets`` loads them, files in ``benchmarks/``).

Import the submodule you need: this package imports nothing by itself, so that the config can
import the leaf ``benchmark_files`` without pulling in ingest (which imports the config).
"""
