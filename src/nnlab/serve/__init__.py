"""The web demo: a FastAPI app (`app`) with the doodle demo's router (`doodle`, over
`nnlab.inference.models.doodle`, micro-batching concurrent requests in `batching`) or the image demo's
(`images`)."""
