"""What the server may load, found on disk: the models and module files of --models-dir
(`models_dir`), a request's module / VAE choices among them (`modules_dir`), and the CLIP
image encoders of IP-Adapter units (`image_encoders`). Imports nothing else of the server.
"""
