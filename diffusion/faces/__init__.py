"""Face restoration as the WebUI does it: GFPGAN (v1.3/v1.4) or CodeFormer over the faces that
facexlib's RetinaFace finds, pasted back through its parsing net's mask (`restore`), from the
files the WebUI keeps in models/GFPGAN, models/Codeformer and models/facexlib (`models`).

Import order: align (geometry) <- restore (the pipeline) <- models (files and networks).
"""

from .models import (
    FACE_RESTORERS,
    FaceFolders,
    FaceModelError,
    FaceRestoration,
    FaceRestorers,
)
from .restore import FaceRestorer, blend

__all__ = ["FACE_RESTORERS", "FaceFolders", "FaceModelError", "FaceRestoration", "FaceRestorer",
           "FaceRestorers", "blend"]
