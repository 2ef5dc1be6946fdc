"""The ControlNet extension's preprocessors ("modules") on the GPU: a picture in, the control
map a ControlNet or T2I-Adapter reads out.

    edges = preprocess("canny", picture, threshold_a=100, threshold_b=200)   # uint8 HxWx3

| module | what | threshold_a / threshold_b |
|---|---|---|
| `none` | the user's own map, as given | |
| `canny` | Canny edges: the pixels of `cv2.Canny` (gpustd.canny) | low / high (100, 200) |
| `invert` | 255 - picture: a black-on-white drawing becomes white-on-black | |
| `threshold` | white where every channel is above the threshold | threshold (127) |
| `scribble_thr` | white where some channel is below 127 (dark strokes on paper) | |
| `blur_gaussian` | `cv2.GaussianBlur(picture, (0, 0), sigma)` | sigma (9) |
| `tile_resample` | downsampled by the rate with OpenCV's area resampling | rate (1: as is) |
| `tile_colorfix`, `+sharp` | the picture as is (pipelines.colorfix: in the UNet) | 8 / 1 |
| `depth_anything_v2` | Depth Anything V2's map, as the extension's (depth.py) | |
| `depth_midas` | MiDaS v3 DPT-Hybrid's relative depth (midas.py) | |
| `normal_midas` | normals from that depth's Sobel gradients (midas.py) | background (0.4) |
| `lineart_realistic`, `lineart_coarse` | informative-drawings' lines (lineart.py) | |
| `lineart_anime` | pix2pix U-Net lines (lineart_anime.py) | |
| `softedge_hed`, `softedge_hedsafe` | HED's soft edges (softedge.py) | |
| `softedge_pidinet`, `softedge_pidisafe` | PiDiNet's soft edges (softedge.py) | |
| `mlsd` | M-LSD's straight segments (mlsd.py) | score (0.1) / length (0.1) |
| `normal_bae` | Bae et al.'s surface normals as colours (normal.py) | |
| `openpose` | people's body joints and limbs (openpose.py; its JSON too) | |
| `openpose_hand`, `openpose_face` | the same with hands / faces (pose_hand.py, pose_face.py) | |
| `openpose_faceonly`, `openpose_full` | faces only / bodies, hands and faces | |
| `dw_openpose_full` | DWPose's whole-body keypoints, drawn as openpose_full (dwpose.py) | |
| `shuffle` | the picture moved along a seeded random flow (shuffle.py), at 512 | |
| `ip-adapter_clip_h`, ... | the picture as is, for an IP-Adapter (ip_adapter_modules.py) | |

depth_anything_v2 reads its model from the path in DEPTH_ANYTHING_V2_MODEL (or
`depth.set_model_path`): Depth-Anything-V2-Small-hf's model.safetensors or folder. The
lineart, softedge, mlsd, normal_bae and midas modules read the extension's annotator files
(sk_model.pth, netG.pth, ControlNetHED.pth, table5_pidinet.pth, mlsd_large_512_fp32.pth,
scannet.pt, dpt_hybrid-midas-501f0c75.pt, body_pose_model.pth, hand_pose_model.pth,
facenet.pth; dw_openpose_full: yolox_l.onnx and dw-ll_ucoco_384.onnx) from the folder in
CONTROLNET_ANNOTATOR_DIR (diffusion.loaders.control.annotator_file). The extension's own
names of some modules (`hed`, `pidinet_safe`, `lineart`, `depth`, ...:
registry.MODULE_ALIASES) name them too.

Pictures are uint8 HxW, HxWx3 or HxWx4 (alpha dropped), as the extension's HWC3 reads them;
maps come back uint8 HxWx3. They run at the picture's own size: the extension's
processor_res resize (and pad to 64) is the caller's choice of input size.
"""

from .ip_adapter_modules import IP_ADAPTER_MODULES
from .registry import PREPROCESSORS, Preprocessor, module_detail, module_list, preprocess

__all__ = ["IP_ADAPTER_MODULES", "PREPROCESSORS", "Preprocessor", "module_detail", "module_list",
           "preprocess"]
