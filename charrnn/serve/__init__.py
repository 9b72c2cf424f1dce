"""`charrnn serve`: a trained model behind an HTTP API and a playground page.

    charrnn serve runs/latest --port 8000          # http://127.0.0.1:8000/ (the playground)
    curl -N localhost:8000/v1/generate --json '{"prime": "ROMEO:", "stream": true}'

One module per concept:

    limits.py      the limits in force and the safety of the address
    validation.py  a request's JSON, checked field by field into settings
    loaded.py      a loaded model, and the watcher that reloads a replaced best.pt
    jobs.py        one request on the worker: its generation (inference/engine.py), its events
    worker.py      the thread that owns the models and advances every stream together, the
                   streams of each model as the rows of one batched step (inference/batch.py)
    sessions.py    the bounded store of hidden states that continue between requests
    service.py     what the routes share: admitting requests, counting streams, sessions
    judge.py       the novelty reports of served samples, on a thread of their own
    app.py         the HTTP routes (Starlette), server-sent events, errors as JSON
    hosts.py       which Host headers are answered: the bound addresses and --allowed-host
    connections.py deadlines for a request to arrive, and the cap on connections
    logs.py        a log that cannot be flooded: one line per kind a minute
    server.py      binding the address and running uvicorn, with a clean shutdown
    static/        the playground: plain HTML, CSS and JavaScript

The HTTP stack (Starlette on uvicorn) is the optional extra `charrnn[serve]`; nothing here
imports it until a server is started.
"""
