"""The names of what a finished trial records, apart from `trainer.outcome` that computes them: readers of a
study (export, status, the report) need the names, not torch or scikit-learn (~2 CPU-s to import)."""

# What a trial's proxy steps made (summed or averaged over its steps).
PROXY_METRICS = (
    "proxy_images",
    "proxy_unchanged",
    "proxy_unchanged_fraction",
    "proxy_zero_maps",
    "proxy_hot_fraction",
    "proxy_changed_fraction",
)
# Every metric a finished trial records (`trainer.outcome.trial_metrics`'s keys; a test keeps the two equal): the
# names the study's attributes, the export and the tables use.
METRICS = (
    "val_accuracy",
    "val_loss",
    "val_accuracy_best",
    "best_epoch",
    "test_accuracy",
    "test_loss",
    "test_precision_macro",
    "test_recall_macro",
    "test_f1_macro",
    "train_seconds",
    "proxy_seconds",
    "own_train_seconds",
    "own_compute_seconds",
    "proxy_steps_done",
    *PROXY_METRICS,
    "epochs",
    "num_classes",
    "images_seen",
    "train_split_images",
    "epochs_to_target",
    "skipped_files",
    "peak_rss_mb",
    "peak_gpu_mem_mb",
    "peak_gpu_reserved_mb",
    "batch_size",
    "mixed_precision_used",
    "seed",
    "test_part",
    "trial_seconds",
)
