"""The HTTP side of the server: the FastAPI app (`create_app`), its routers, the request
schemas, requests -> jobs and results -> responses (`generation`, `controlnet_units`), the
WebUI's error shapes (`limits`) and the web page's files (`static/`).

Imports point down: api -> diffusion.server.jobs -> diffusion.server.settings ->
diffusion.server.catalog, and diffusion.server.images.
"""
