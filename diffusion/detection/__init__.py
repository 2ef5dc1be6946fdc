"""Object detection for ADetailer: ultralytics' YOLOv8 detection files on gpustd.

    yolo = load_yolo("models/adetailer/face_yolov8n.pt")
    found = detect(yolo, picture, confidence=0.3)   # boxes x1 y1 x2 y2, scores, classes

Modules, in import order: `yolo` (the network and its decoding), `segment` (YOLOv8-seg's mask
branch and ultralytics' process_mask), `yolo_file` (the .pt read without running its pickle),
`boxes` (letterbox, NMS, boxes and masks), `masks` (ADetailer's masks from them).
"""

from .boxes import Detections, detect
from .yolo_file import YoloFile, check_yolo, load_yolo

__all__ = ["Detections", "YoloFile", "check_yolo", "detect", "load_yolo"]
