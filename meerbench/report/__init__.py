"""Reports from Result files: paper tables, plots, the leaderboard and its regression check.

``grid`` reads Results into cells, ``significance`` runs paired tests from score files,
``tables``/``plots``/``leaderboard``/``page``/``compare`` write the artefacts, and ``commands``
is what the CLI calls.
"""
