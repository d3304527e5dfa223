"""The web demo: a FastAPI app (`app`) over the doodle model of `nnlab.inference.doodle`, with
micro-batching of concurrent requests (`batching`)."""
