"""Benchmarks of lit_itpo: one module per results table, run from the repository root as
``python -m benchmarks.<name>``; results under ``benchmarks/results/``, rendered into
docs/RESULTS.md by ``python -m benchmarks.render_results``. They use lit_itpo's public API
only; ``benchmarks.common`` holds what they share (machine, results files, timing, FLOPs),
``benchmarks.cells`` how a suite's commands run (locally in parallel, or a SLURM job array)."""
