"""Where the server's jobs run: one FIFO queue in front of worker threads (`worker`: a
`Worker`, a `Slot` per device in `slots`; a picture job, its result and what happens to each
picture after sampling in `pictures`) or worker processes (`processes`, each running `child`),
and how a worker loads a pipeline as the server's settings say (`loader`).

Knows nothing of HTTP; imports diffusion.server.catalog (model entries),
diffusion.server.images (saved files, previews) and diffusion.server.settings.
"""
