"""A trial's data path: which files make up a dataset (`identity`), an image folder's layout read without decoding
(`imagefolder`), decoding to uint8 pixels (`decode`), the per-machine decoded-image cache (`cache`, over `rows`), the
images of a trial (`imageset`, `load`), its one split (`split`) and the batches of an epoch (`batching`). Imports only
itself and the trainer's config, errors and files."""
