"""Scale-out on Ray (the optional ``ray`` extra): batch embedding, indexing and feature caches as Ray Data
pipelines (:mod:`mde.cluster.embed`), on a local Ray instance started in this process or on an existing
cluster (:mod:`mde.cluster.session`)."""
