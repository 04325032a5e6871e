"""Blob stores: implementations of `dockyard.domain.ports.BlobStore`."""
