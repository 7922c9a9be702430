"""The grid-search orchestrator: spaces -> an Optuna study in SQLite -> trials dispatched locally or through Ray."""
