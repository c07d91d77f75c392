"""One-off investigations (studies), apart from the benchmarks that reproduce today's tables:
each module is runnable (``python -m benchmarks.studies.<module>``, protocol in its docstring),
records under ``benchmarks/results/studies/`` and is rendered to ``docs/studies/<page>.md`` by
``python -m benchmarks.studies.render``. Nothing in ``lit_itpo`` or ``benchmarks`` imports a
study."""
