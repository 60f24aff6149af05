"""Reports: turn Result files into tables (and, later, plots and leaderboards)."""
