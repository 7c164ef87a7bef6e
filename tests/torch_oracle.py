"""PyTorch as the autograd oracle: gradients of the same MLP, sample-major, float64.

Independent of the package's backpropagation and of ``reference.backprop`` alike:
torch differentiates the forward pass it is given. Nothing here imports sparseprune.
"""

import numpy as np


def batch_gradients(weights, biases, X, y, batch_size, gates=False):
    """Per mini-batch of (X, y) in data order: (batch size, [dL/dW (in, out)], [dL/dm
    (units,)]) with L the batch's mean softmax cross-entropy of the MLP (ReLU hidden
    layers, weights[i] (in, out)), and m a gate of ones on each hidden layer's output
    (``gates=True``; else an empty list)."""
    import torch

    Ws = [torch.tensor(np.asarray(w, np.float64), requires_grad=True) for w in weights]
    bs = [torch.tensor(np.asarray(b, np.float64)) for b in biases]
    X = np.asarray(X, np.float64)
    for start in range(0, len(y), batch_size):
        xb = torch.tensor(X[start : start + batch_size])
        yb = torch.tensor(np.asarray(y[start : start + batch_size], np.int64))
        a, ms = xb, []
        for i, (W, b) in enumerate(zip(Ws, bs)):
            z = a @ W + b
            if i < len(Ws) - 1:
                a = torch.relu(z)
                if gates:
                    m = torch.ones(a.shape[1], dtype=torch.float64, requires_grad=True)
                    ms.append(m)
                    a = a * m
        loss = torch.nn.functional.cross_entropy(z, yb)
        grads = torch.autograd.grad(loss, Ws + ms)
        yield (len(yb), [g.numpy() for g in grads[: len(Ws)]],
               [g.numpy() for g in grads[len(Ws) :]])
