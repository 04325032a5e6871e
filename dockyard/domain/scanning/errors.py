"""The one error the scanning domain raises to callers."""

from __future__ import annotations

from typing import Final

from dockyard.domain.errors import DockyardError, ErrorKind

# ECR answers StartImageScan with UnsupportedImageTypeException for images it cannot scan; a layer we
# refuse to read (corrupt, over a limit) is the same situation seen from the client's side.
SCAN_FAILED: Final = ErrorKind(
    oci_code="UNSUPPORTED",
    http_status=400,
    ecr_exception="UnsupportedImageTypeException",
    default_message="the image could not be scanned",
)


class ScanFailed(DockyardError):
    """An image whose layers cannot be read safely: corrupt data or a limit against tar bombs exceeded."""

    kind = SCAN_FAILED
