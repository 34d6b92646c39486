"""The OpenAI-compatible HTTP server (`python -m runtime.serve`).

protocol.py / responses.py  request and response bodies (pydantic), input validation
errors.py                   OpenAI error bodies; 422 -> 400
prompts.py                  tokenization, chat templates, context-length budget
async_engine.py             one engine thread shared by all requests; abort on disconnect
completions.py / chat.py    the two generation endpoints (full and streamed)
formatting.py / sse.py      logprob blocks, streaming deltas, SSE framing
app.py                      FastAPI routes, API key, disconnect handling
"""
