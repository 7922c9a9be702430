"""The study's record: where its files live (`paths`), its SQLite database (`storage`), the artifact store (`store`),
its attributes (`record`), its trials read in bulk (`trials`), where its points stand (`tally`), the Optuna study
(`study`) and the study as tables (`trialtable`)."""
