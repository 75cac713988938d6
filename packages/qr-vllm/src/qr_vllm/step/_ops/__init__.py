"""The step's operations, apart from the sampler that runs them in order.

* :mod:`.entropy`: the fetch, one for all rows or one per experiment arm;
* :mod:`.amplify`: each row's bytes to its u, on the host;
* :mod:`.host`: the host path's temperatures and selection (CPU logits);
* :mod:`.device`: the device path's one upload, temperatures and selection;
* :mod:`.transfer`: the device path's wait, its two copies and their buffers;
* :mod:`.arrays`: zero-copy views, scatter and gather, and forcing the tokens.
"""
