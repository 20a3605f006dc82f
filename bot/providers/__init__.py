"""Image providers (BFL, AI/ML API) behind one protocol.

base.py           the protocol the job engine uses (Provider, Submission, TaskResult, ...)
bfl_options.py    BFL: sizes, options, prices and catalogue entries
bfl.py            BFL: the request body and the client (submit, poll, download)
aiml_options.py   AI/ML API: models, limits, options, prices and catalogue entries
aiml_payload.py   AI/ML API: the request body, checked against aiml_options
aiml.py           AI/ML API: the client (one synchronous POST, results held for the engine)
http.py           what both clients share: retries, capped reads, result downloads
egress.py         where a client may connect and which hosts may see an API key
"""
