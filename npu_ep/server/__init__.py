"""`npu-ep serve`: OpenAI's audio transcription API over HTTP, and a page to use it from a browser.

Layers: `uploads` (multipart body streamed to a temporary file), `workers` (loaded pipelines, bounded
queue, worker threads), `responses` (OpenAI's response formats and stream events), `app` (the FastAPI
routes), `command` (the CLI). FastAPI, uvicorn and python-multipart come with the `server` extra.
"""
