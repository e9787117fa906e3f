"""The CUDA overlay: signed layer manifests, the release index, install and activation."""
